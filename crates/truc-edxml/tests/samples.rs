//! Every sample package gives what `expect.json` says.
//!
//! The samples are read from `../shared/samples` when it sits beside the checkout (so new
//! samples are picked up), else from the copy in `tests/fixtures/samples`.

use std::path::PathBuf;

use serde_json::Value;
use truc_edxml::{parse, EdxmlError, Limits, PackageKind, PackageReader};

fn samples_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = root.join("../shared/samples");
    if shared.join("expect.json").is_file() {
        shared
    } else {
        root.join("tests/fixtures/samples")
    }
}

/// The kinds of error `expect.json` names, and the codes that answer them.
fn code_for(kind: &str) -> &'static str {
    match kind {
        "base64" => "EDXML_BAD_BASE64",
        "organ id" => "EDXML_BAD_ORGAN_ID",
        "dtd" => "EDXML_DTD_FORBIDDEN",
        "depth" => "EDXML_TOO_DEEP",
        "empty" => "EDXML_EMPTY",
        "no recipient" => "EDXML_NO_RECIPIENT",
        "xml" => "EDXML_MALFORMED",
        "namespace" => "EDXML_BAD_NAMESPACE",
        other => panic!("expect.json names an error kind this test does not know: {other}"),
    }
}

fn read(name: &str) -> Vec<u8> {
    let dir = samples_dir();
    for sub in ["valid", "invalid"] {
        let p = dir.join(sub).join(name);
        if p.is_file() {
            return std::fs::read(&p).expect("read sample");
        }
    }
    panic!("sample {name} not found in {}", dir.display());
}

/// Parses in chunks of `chunk` bytes through the streaming reader.
fn parse_chunked(bytes: &[u8], chunk: usize) -> Result<truc_edxml::PackageMeta, EdxmlError> {
    let mut r = PackageReader::new(Limits::default());
    for piece in bytes.chunks(chunk) {
        r.feed(piece)?;
    }
    r.finish()
}

#[test]
fn every_sample_gives_what_expect_json_says() {
    let expect: Value = serde_json::from_slice(
        &std::fs::read(samples_dir().join("expect.json")).expect("expect.json"),
    )
    .expect("expect.json is JSON");
    let expect = expect.as_object().expect("an object");
    assert!(expect.len() >= 14, "expected the full sample set");
    for (name, want) in expect {
        let bytes = read(name);
        let got = parse(&bytes);
        for chunk in [1, 7, 4096] {
            assert_eq!(
                parse_chunked(&bytes, chunk),
                got,
                "{name}: chunked parsing ({chunk}) must agree with whole parsing"
            );
        }
        // Without attachment digests (as the relay reads): the same answer, digests unset.
        let mut lean = PackageReader::new(Limits::default()).without_attachment_digests();
        let lean = lean.feed(&bytes).and_then(|()| lean.finish());
        let mut expected_lean = got.clone();
        if let Ok(meta) = &mut expected_lean {
            if let truc_edxml::PackageBody::Document(doc) = &mut meta.body {
                for a in &mut doc.attachments {
                    a.sha256 = None;
                }
            }
        }
        assert_eq!(lean, expected_lean, "{name}: without attachment digests");
        if let Some(kind) = want.get("error").and_then(Value::as_str) {
            let err = got.expect_err(name);
            assert_eq!(err.code(), code_for(kind), "{name}: {err}");
            continue;
        }
        let meta = got.unwrap_or_else(|e| panic!("{name}: {} {e}", e.code()));
        let kind = want["kind"].as_str().expect("kind");
        assert_eq!(
            meta.kind(),
            if kind == "document" {
                PackageKind::Document
            } else {
                PackageKind::Status
            },
            "{name}"
        );
        assert_eq!(
            meta.from().as_str(),
            want["from"].as_str().expect("from"),
            "{name}"
        );
        if let Some(to) = want.get("to") {
            let to: Vec<&str> = to
                .as_array()
                .expect("to")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let got: Vec<&str> = meta.recipients().map(|c| c.as_str()).collect();
            assert_eq!(got, to, "{name}");
        }
        if let Some(id) = want.get("document_id") {
            assert_eq!(
                meta.document_id().map(|d| d.as_str()),
                id.as_str(),
                "{name}"
            );
        }
        if let Some(id) = want.get("answers_document_id") {
            let s = meta.status().expect("status");
            assert_eq!(
                s.response_for.document_id.as_ref().map(|d| d.as_str()),
                id.as_str(),
                "{name}"
            );
        }
        if let Some(code) = want.get("status_code") {
            assert_eq!(
                meta.status().map(|s| s.status_code.as_str()),
                code.as_str(),
                "{name}"
            );
        }
        if let Some(t) = want.get("business_doc_type") {
            assert_eq!(
                u64::from(meta.business_doc_type().code()),
                t.as_u64().expect("n"),
                "{name}"
            );
        }
        if let Some(n) = want.get("attachments") {
            let d = meta.document().expect("document");
            assert_eq!(d.attachments.len() as u64, n.as_u64().expect("n"), "{name}");
            for a in &d.attachments {
                assert!(a.sha256.is_some(), "{name}: attachment digest");
            }
        }
        if let Some(n) = want.get("attachment_bytes") {
            assert_eq!(meta.attachment_bytes(), n.as_u64().expect("n"), "{name}");
        }
        if let Some(p) = want.get("priority") {
            assert_eq!(
                meta.document().and_then(|d| d.priority).map(u64::from),
                p.as_u64(),
                "{name}"
            );
        }
        if let Some(sig) = want.get("signature") {
            assert_eq!(
                meta.signature.is_some(),
                sig.as_bool().expect("bool"),
                "{name}"
            );
        }
        if let Some(sha) = want.get("sha256") {
            assert_eq!(meta.sha256.to_hex(), sha.as_str().expect("hex"), "{name}");
        }
        assert_eq!(meta.size, bytes.len() as u64);
    }
}

#[test]
fn the_fixture_copy_matches_shared_samples_when_present() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = root.join("../shared/samples");
    if !shared.is_dir() {
        return;
    }
    let fixtures = root.join("tests/fixtures/samples");
    for sub in ["valid", "invalid"] {
        for entry in std::fs::read_dir(shared.join(sub)).expect("dir") {
            let entry = entry.expect("entry");
            let copy = fixtures.join(sub).join(entry.file_name());
            assert_eq!(
                std::fs::read(entry.path()).expect("read"),
                std::fs::read(&copy).unwrap_or_default(),
                "refresh tests/fixtures/samples: {} differs from ../shared",
                copy.display()
            );
        }
    }
}

#[test]
fn errors_name_the_element_at_fault() {
    let err = parse(&read("bad-organ-id.edxml")).expect_err("bad");
    assert!(
        err.to_string().contains("MessageHeader/From/OrganId"),
        "{err}"
    );
    assert!(err.to_string().contains("\"ABC\""), "{err}");
    let err = parse(&read("bad-base64.edxml")).expect_err("bad");
    assert!(err.to_string().contains("a.pdf"), "{err}");
    assert!(err.to_string().contains("'!'"), "{err}");
    let err = parse(&read("wrong-namespace.edxml")).expect_err("bad");
    assert!(err.to_string().contains("http://www.go.vn/eDoc"), "{err}");
}

#[test]
fn the_level3_sample_reads_bom_crlf_and_dsig_namespace() {
    let meta = parse(&read("doc-level3-bom-crlf.edxml")).expect("valid");
    let doc = meta.document().expect("document");
    assert_eq!(
        doc.to[0]
            .organ_id
            .parent()
            .map(|p| p.to_string())
            .as_deref(),
        Some("000.00.05.G04")
    );
    assert_eq!(doc.attachments.len(), 2);
    assert!(meta.signature.is_some());
    let basic = parse(&read("doc-basic.edxml")).expect("valid");
    assert_eq!(
        basic
            .signature
            .as_ref()
            .and_then(|s| s.signer_subject.as_deref()),
        Some("CN=Van thu")
    );
    let a = &basic.document().expect("doc").attachments[0];
    assert_eq!(a.name, "congvan.pdf");
    assert_eq!(a.content_type, "application/pdf");
    assert_eq!(a.content_id, "cid:1");
    assert_eq!(
        a.sha256,
        Some(truc_edxml::Sha256Digest::of(
            b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
        ))
    );
}
