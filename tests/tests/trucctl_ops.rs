//! `trucctl` against a real `trucd` process: every operations command, its exit codes, its
//! JSON, bad tokens and bad input, and a dead letter that is requeued and then delivered.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use truc_edxml::{CalendarDate, DocumentBuilder};
use truc_tests::{code, trucctl_binary, TestRelay, ADMIN_TOKEN};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

struct Ctl {
    url: String,
    home: tempfile::TempDir,
}

impl Ctl {
    fn command(&self, token: Option<&str>) -> Command {
        let mut c = Command::new(trucctl_binary().expect("trucctl"));
        for (name, _) in std::env::vars() {
            if name.starts_with("TRUC") {
                c.env_remove(name);
            }
        }
        // No settings file of the machine's user is read.
        c.env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path())
            .env("TRUC_ADMIN_URL", &self.url);
        if let Some(t) = token {
            c.env("TRUC_ADMIN_TOKEN", t);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(Some(ADMIN_TOKEN))
            .args(args)
            .output()
            .expect("trucctl runs")
    }

    /// Runs, expects success, returns standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "trucctl {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        serde_json::from_str(&self.ok(&with_json)).expect("JSON output")
    }

    /// Runs, expects exit `code` and `needle` on standard error.
    fn fails(&self, args: &[&str], exit: i32, needle: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(exit), "trucctl {args:?}: {stderr}");
        assert!(stderr.contains(needle), "trucctl {args:?}: {stderr}");
    }
}

fn date() -> CalendarDate {
    CalendarDate::new(2026, 11, 21).expect("date")
}

/// Sends a document A → B and lets B's adapter refuse it once it is older than the
/// relay's maximum age (1 s here): a dead letter. Returns its message id.
async fn dead_letter(relay: &TestRelay, ctl: &Ctl, number: &str) -> String {
    let mut a = relay.adapter(A).await.expect("adapter A");
    let doc = DocumentBuilder::new(code(A), vec![code(B)], date(), number, "DLQ")
        .subject("refused by the recipient")
        .build();
    let receipt = a.submit_document(&doc, None).await.expect("submit");
    let mut b = relay.adapter(B).await.expect("adapter B");
    let mut inbox = b.inbox(1).await.expect("inbox");
    let got = tokio::time::timeout(Duration::from_secs(20), inbox.next())
        .await
        .expect("in time")
        .expect("inbox")
        .expect("delivery");
    assert_eq!(got.message_id, receipt.message_id);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    inbox
        .nack(&got.delivery_id, "the unit's system cannot file it")
        .await
        .expect("nack");
    // The stream stays open until the relay has recorded the refusal (closing it at once
    // could release the delivery before the nack is read).
    for _ in 0..200 {
        let list = ctl.json(&["dlq", "list"]);
        let listed = list["dead_letters"].as_array().is_some_and(|l| {
            l.iter()
                .any(|d| d["delivery"]["key"]["message_id"] == receipt.message_id.as_str())
        });
        if listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(inbox);
    receipt.message_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operations_command_works_against_a_running_relay() {
    let relay =
        TestRelay::spawn_process_with(&[A, B], "retry_base_ms = 10\nretry_max_age_secs = 1\n")
            .await
            .expect("trucd");
    let ctl = Ctl {
        url: format!("http://{}", relay.admin_addr.expect("admin API")),
        home: tempfile::tempdir().expect("home"),
    };

    // Status and units.
    let status = ctl.ok(&["status"]);
    assert!(status.contains("serving 000.00.00.G04"), "{status}");
    assert!(status.contains("284 (284 active"), "{status}");
    assert_eq!(ctl.json(&["status"])["units"]["total"], 284);
    let children = ctl.json(&["units", "list", "--parent", A]);
    assert_eq!(children["units"].as_array().map(Vec::len), Some(12));
    assert!(ctl.ok(&["units", "show", A]).contains("Tổng cục Đường bộ"));
    ctl.ok(&[
        "units",
        "add",
        "--code",
        "000.00.88.G04",
        "--name",
        "Ban Quản lý dự án 88",
        "--pending",
    ]);
    ctl.fails(
        &["units", "add", "--code", "000.00.88.G04", "--name", "again"],
        1,
        "ADMIN_CONFLICT",
    );
    assert!(ctl
        .ok(&["units", "activate", "000.00.88.G04"])
        .contains("is active"));
    assert!(ctl
        .ok(&["units", "suspend", "000.00.88.G04"])
        .contains("is suspended"));
    let fp = "AB".repeat(32);
    let rotated = ctl.json(&["units", "rotate-cert", A, "--add", &fp]);
    assert!(rotated["certificates"]
        .as_array()
        .is_some_and(|c| c.iter().any(|f| f == &fp.to_lowercase())));
    ctl.ok(&["units", "rotate-cert", A, "--remove", &fp]);
    ctl.fails(
        &["units", "rotate-cert", A, "--add", "zz"],
        1,
        "ADMIN_BAD_REQUEST",
    );
    ctl.fails(&["units", "show", "000.00.99.G04"], 1, "ADMIN_NOT_FOUND");
    ctl.fails(&["units", "show", "nonsense"], 1, "ADMIN_BAD_REQUEST");

    // A dead letter, requeued, then delivered.
    let dead = dead_letter(&relay, &ctl, "1").await;
    let list = ctl.json(&["dlq", "list"]);
    let entries = list["dead_letters"].as_array().expect("list");
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["delivery"]["key"]["message_id"], dead.as_str());
    assert!(ctl.ok(&["dlq", "list"]).contains("1 dead letter(s)"));
    let shown = ctl.ok(&["dlq", "show", &dead, B]);
    assert!(shown.contains("cannot file it"), "{shown}");
    assert!(ctl.ok(&["queues"]).contains("DESTINATION"));
    assert!(ctl.ok(&["dlq", "requeue", &dead, B]).contains("requeued"));
    ctl.fails(&["dlq", "requeue", &dead, B], 1, "STORE_WRONG_STATE");
    let mut b = relay.adapter(B).await.expect("adapter B");
    let mut inbox = b.inbox(1).await.expect("inbox");
    let again = tokio::time::timeout(Duration::from_secs(20), inbox.next())
        .await
        .expect("redelivered in time")
        .expect("inbox")
        .expect("delivery");
    assert_eq!(again.message_id, dead);
    inbox.ack(&again.delivery_id).await.expect("ack");
    // The stream stays open until the relay has applied the ack (dropping it at once can
    // reset the stream before the ack is read; the delivery would then come again later).
    let mut acknowledged = false;
    for _ in 0..200 {
        let trace = ctl.json(&["trace", &dead]);
        acknowledged = trace["trace"]["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["state"] == "acknowledged"));
        if acknowledged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(inbox);
    assert!(
        acknowledged,
        "the requeued letter was delivered and acknowledged"
    );
    let document_id = format!("{A},2026/11/21,1/DLQ");
    assert!(ctl.ok(&["trace", &document_id]).contains("acknowledged"));

    // Another dead letter, dropped with a reason.
    let second = dead_letter(&relay, &ctl, "2").await;
    ctl.fails(&["dlq", "drop", &second, B], 2, "--reason");
    assert!(ctl
        .ok(&["dlq", "drop", &second, B, "--reason", "sent again on paper"])
        .contains("dropped"));
    assert_eq!(
        ctl.json(&["dlq", "list"])["dead_letters"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    // Reports.
    assert!(ctl.ok(&["overdue"]).contains("overdue document(s)"));
    let stats = ctl.json(&["stats", "--from", "2020-01-01", "--unit", A]);
    let a_sent = stats["units"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["unit"] == A))
        .map(|u| u["documents_sent"].as_u64().unwrap_or(0));
    assert_eq!(a_sent, Some(2), "{stats}");
    assert!(ctl
        .ok(&["stats", "--from", "2020-01-01"])
        .contains("2 sent, 2 received"));
    ctl.fails(&["stats", "--from", "20261121"], 1, "ADMIN_BAD_REQUEST");

    // The audit log: intact, with every change by the token's name.
    assert!(ctl.ok(&["audit", "verify"]).contains("audit log intact"));
    let log = ctl.json(&["audit", "log", "--limit", "1000"]);
    let actions: Vec<String> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["actor"] == "admin:test")
        .map(|e| e["action"].as_str().unwrap_or("").to_owned())
        .collect();
    for action in ["unit.upsert", "unit.certificates", "requeue", "drop"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing from {actions:?}"
        );
    }

    // Backup of the running store, and the log level.
    let backup_dir = relay.dir.path().join("backup-1");
    let out = ctl.ok(&["backup", backup_dir.to_str().expect("utf-8 path")]);
    assert!(out.contains("backup written"), "{out}");
    assert!(non_empty(&backup_dir));
    ctl.fails(
        &["backup", backup_dir.to_str().expect("utf-8 path")],
        1,
        "STORE_BACKUP",
    );
    assert!(ctl.ok(&["log-level", "debug"]).contains("debug"));
    assert!(ctl.ok(&["log-level"]).contains("log level: debug"));
    ctl.fails(&["log-level", "no=such=filter[["], 1, "ADMIN_BAD_REQUEST");
    ctl.ok(&["log-level", "info"]);

    // Tokens: a new one prints its hash for the configuration.
    let out = ctl.ok(&["token", "new", "--name", "ops"]);
    let token = out.lines().nth(1).expect("token line").trim().to_owned();
    let sha: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(out.contains(&format!("sha256 = \"{sha}\"")), "{out}");
    assert!(out.contains("name = \"ops\""));

    // Exit codes scripts rely on: refused 1, usage 2, unreachable 3.
    let out = ctl
        .command(Some("a-wrong-token"))
        .arg("status")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ADMIN_UNAUTHORIZED"));
    let out = ctl.command(None).arg("queues").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token given"));
    ctl.fails(&["dlq", "requeue"], 2, "MESSAGE_ID");
    ctl.fails(&["--admin", "ftp://example", "status"], 2, "not an http");
    ctl.fails(
        &["--admin", "http://127.0.0.1:1", "status"],
        3,
        "cannot reach",
    );

    // The settings file is the last resort for address and token.
    let settings = ctl.home.path().join("truc");
    std::fs::create_dir_all(&settings).expect("mkdir");
    std::fs::write(
        settings.join("trucctl.toml"),
        format!("admin = \"{}\"\ntoken = \"{ADMIN_TOKEN}\"\n", ctl.url),
    )
    .expect("write settings");
    let out = ctl
        .command(None)
        .env_remove("TRUC_ADMIN_URL")
        .arg("status")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    relay.stop().await.expect("stop");
}

fn non_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}
