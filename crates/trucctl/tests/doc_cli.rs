//! Black-box tests of `trucctl doc`: the real binary, real files, exit codes and JSON.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn trucctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trucctl"))
        .args(args)
        .output()
        .expect("run trucctl")
}

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/samples")
        .join(rel)
        .display()
        .to_string()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn inspect_json_reports_every_field_scripts_need() {
    let out = trucctl(&[
        "doc",
        "inspect",
        "--json",
        &fixture("valid/doc-basic.edxml"),
        &fixture("valid/status-03-accepted.edxml"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = json_lines(&out);
    assert_eq!(reports.len(), 2);
    let doc = &reports[0];
    assert_eq!(doc["kind"], "document");
    assert_eq!(doc["from"], "000.00.05.G04");
    assert_eq!(
        doc["to"],
        serde_json::json!(["000.00.07.G04", "000.00.00.G12"])
    );
    assert_eq!(
        doc["document_id"],
        "000.00.05.G04,2026/11/20,1234/TCĐBVN-VP"
    );
    assert_eq!(doc["business_doc_type"], 0);
    assert_eq!(doc["priority"], 0);
    assert_eq!(doc["due_date"], "2026/12/15");
    assert_eq!(doc["attachments"]["count"], 1);
    assert_eq!(doc["attachments"]["total_bytes"], 45);
    assert_eq!(doc["attachments"]["items"][0]["name"], "congvan.pdf");
    assert_eq!(
        doc["attachments"]["items"][0]["sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    assert_eq!(doc["signature"], true);
    assert_eq!(
        doc["sha256"],
        "b604e08787423de5b7b265947502b47ea4b1aaa3083596ed93f95418b9917cb6"
    );
    assert_eq!(doc["size"], 4594);
    let status = &reports[1];
    assert_eq!(status["kind"], "status");
    assert_eq!(status["status_code"], "03");
    assert_eq!(
        status["document_id"],
        "000.00.05.G04,2026/11/20,1234/TCĐBVN-VP"
    );
}

#[test]
fn an_invalid_package_exits_1_with_its_code_on_stderr() {
    let out = trucctl(&[
        "doc",
        "inspect",
        &fixture("valid/doc-basic.edxml"),
        &fixture("invalid/billion-laughs.edxml"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("billion-laughs.edxml: EDXML_DTD_FORBIDDEN"),
        "{stderr}"
    );
    // The valid file was still reported.
    assert!(String::from_utf8_lossy(&out.stdout).contains("000.00.05.G04"));
}

#[test]
fn a_missing_file_exits_3_and_bad_usage_exits_2() {
    let out = trucctl(&["doc", "inspect", "/nonexistent/package.edxml"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/package.edxml"));
    assert_eq!(trucctl(&["doc", "inspect"]).status.code(), Some(2));
    assert_eq!(trucctl(&["doc", "frobnicate"]).status.code(), Some(2));
}

#[test]
fn new_builds_packages_that_inspect_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let attachment = dir.path().join("congvan.pdf");
    std::fs::write(&attachment, b"%PDF-1.4 test").expect("write");
    let doc = dir.path().join("doc.edxml");
    let out = trucctl(&[
        "doc",
        "new",
        "--from",
        "000.00.05.G04",
        "--to",
        "000.03.07.G04",
        "--to",
        "000.00.00.G12",
        "--subject",
        "Về việc thử <nghiệm> & kiểm tra",
        "--number",
        "15",
        "--notation",
        "TCĐBVN-VP",
        "--date",
        "2026/11/21",
        "--due",
        "2026/12/01",
        "--priority",
        "2",
        "--attach",
        attachment.to_str().expect("utf8"),
        "-o",
        doc.to_str().expect("utf8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = dir.path().join("status.edxml");
    let out = trucctl(&[
        "doc",
        "new-status",
        "--from",
        "000.03.07.G04",
        "--document-id",
        "000.00.05.G04,2026/11/21,15/TCĐBVN-VP",
        "--code",
        "6",
        "-o",
        status.to_str().expect("utf8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = trucctl(&[
        "doc",
        "inspect",
        "--json",
        doc.to_str().expect("utf8"),
        status.to_str().expect("utf8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = json_lines(&out);
    assert_eq!(reports[0]["subject"], "Về việc thử <nghiệm> & kiểm tra");
    assert_eq!(
        reports[0]["to"],
        serde_json::json!(["000.03.07.G04", "000.00.00.G12"])
    );
    assert_eq!(
        reports[0]["document_id"],
        "000.00.05.G04,2026/11/21,15/TCĐBVN-VP"
    );
    assert_eq!(reports[0]["priority"], 2);
    assert_eq!(reports[0]["due_date"], "2026/12/01");
    assert_eq!(reports[0]["attachments"]["items"][0]["size"], 13);
    assert_eq!(
        reports[0]["attachments"]["items"][0]["content_type"],
        "application/pdf"
    );
    assert_eq!(reports[1]["status_code"], "06");
    assert_eq!(
        reports[1]["document_id"],
        "000.00.05.G04,2026/11/21,15/TCĐBVN-VP"
    );

    let out = trucctl(&[
        "doc",
        "new",
        "--from",
        "ABC",
        "--to",
        "000.00.00.G12",
        "--subject",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"ABC\" is not a unit code") && stderr.contains("--from"),
        "{stderr}"
    );
}

#[test]
fn registry_sample_writes_the_transport_ministry() {
    let out = trucctl(&["registry", "sample"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ministry = \"000.00.00.G04\""));
    assert_eq!(text.matches("[[unit]]").count(), 1 + 57 + 226);
    assert!(text.contains("Tổng cục Đường bộ Việt Nam"));
}

#[test]
fn a_settings_file_that_cannot_be_read_is_a_file_error_and_one_that_does_not_parse_is_bad_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let out = trucctl(&["queues", "--ctl-config", &missing.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "admin = [not toml").expect("write");
    let out = trucctl(&["queues", "--ctl-config", &broken.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken.toml"), "{stderr}");
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, b"admin = \"\xff\xfe\"\n").expect("write");
    let out = trucctl(&["queues", "--ctl-config", &binary.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "not text is bad settings: {stderr}"
    );
}
