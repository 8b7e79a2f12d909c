//! `trucctl store restore` and `check` against a real store and backup.

use std::process::Command;

use truc_edxml::{BusinessDocType, DocumentId, OrgCode, PackageKind, Sha256Digest};
use truc_store::{
    Destination, NewMessage, PayloadInput, Route, SledStore, Source, Store, StoreConfig, Summary,
    Timestamp,
};

fn trucctl(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trucctl"))
        .args(args)
        .output()
        .expect("run trucctl")
}

#[test]
fn restore_builds_a_store_that_check_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let backup_dir = dir.path().join("backup");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let id = rt.block_on(async {
        let store = SledStore::open(&store_dir, StoreConfig::default()).expect("open");
        let code = |s: &str| OrgCode::parse(s).expect("code");
        let bytes = b"<edXML>restore me</edXML>".to_vec();
        let outcome = store
            .submit(NewMessage {
                kind: PackageKind::Document,
                sender: code("000.00.05.G04"),
                document_id: Some(DocumentId::new("000.00.05.G04,2026/11/21,1/X")),
                business_doc_type: BusinessDocType::New,
                sha256: Sha256Digest::of(&bytes),
                source: Source::Operator {
                    actor: "test".into(),
                },
                received_at: Timestamp::now(),
                routes: vec![Route {
                    recipient: code("000.00.07.G04"),
                    destination: Destination::Inbox(code("000.00.07.G04")),
                    held: false,
                }],
                summary: Summary::default(),
                idempotency_key: None,
                payload: PayloadInput::Bytes(bytes.into()),
            })
            .await
            .expect("submit");
        store
            .audit("operator:an", "backup", "", "", Timestamp::now())
            .await
            .expect("audit");
        store.backup(&backup_dir).await.expect("backup");
        outcome.record().id
    });

    let restored = dir.path().join("restored");
    let out = trucctl(&[
        "store".as_ref(),
        "restore".as_ref(),
        backup_dir.as_os_str(),
        restored.as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("restored"));

    let out = trucctl(&[
        "store".as_ref(),
        "check".as_ref(),
        restored.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["audit_entries"], 1);
    assert_eq!(report["audit_first_bad"], serde_json::Value::Null);

    let bytes = rt.block_on(async {
        let store = SledStore::open(&restored, StoreConfig::default()).expect("open restored");
        store
            .payload(id)
            .await
            .expect("payload")
            .read_all()
            .expect("read")
    });
    assert_eq!(bytes.as_ref(), b"<edXML>restore me</edXML>");

    // Restoring again onto the non-empty directory fails with exit code 3 and says why.
    let out = trucctl(&[
        "store".as_ref(),
        "restore".as_ref(),
        backup_dir.as_os_str(),
        restored.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}
