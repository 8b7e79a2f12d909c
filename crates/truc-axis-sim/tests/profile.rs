//! The simulator over real HTTP: the profile's operations, signatures, and fault knobs.

use serde_json::Value;
use truc_axis_sim::{Faults, SimConfig, Simulator, SystemConfig};
use truc_vdxp::{op, param, value};

struct Sim {
    sim: Simulator,
    base: String,
    http: reqwest::Client,
    _local: truc_axis_sim::LocalSimulator,
}

async fn start() -> Sim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = SimConfig {
        systems: vec![
            SystemConfig {
                id: "bogtvt".into(),
                secret: "secret-gtvt".into(),
                organs: vec!["000.00.00.G04".into()],
                name: "Bộ GTVT".into(),
            },
            SystemConfig {
                id: "botc".into(),
                secret: "secret-tc".into(),
                organs: vec!["000.00.00.G12".into()],
                name: "Bộ Tài chính".into(),
            },
        ],
        agencies: Vec::new(),
        skew_secs: 300,
        max_package_bytes: 512 * 1024 * 1024,
    };
    let local = truc_axis_sim::LocalSimulator::start(config.systems)
        .await
        .expect("simulator");
    Sim {
        sim: local.sim.clone(),
        base: local.base_url.clone(),
        http: reqwest::Client::new(),
        _local: local,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

impl Sim {
    async fn call(
        &self,
        system: &str,
        secret: &str,
        operation: &str,
        params: &[(&str, &str)],
        file: Option<Vec<u8>>,
        ts: Option<String>,
    ) -> (u16, Value) {
        let ts = ts.unwrap_or_else(|| truc_vdxp::format_timestamp(now_ms()));
        let mut all = vec![(param::SYSTEM_ID, system), (param::TIMESTAMP, ts.as_str())];
        all.extend_from_slice(params);
        let mut req = self.http.post(format!("{}/{operation}", self.base));
        for (k, v) in truc_vdxp::sign(&all, secret.as_bytes()) {
            req = req.header(k, v);
        }
        if let Some(bytes) = file {
            let part = reqwest::multipart::Part::bytes(bytes)
                .file_name("package.edxml")
                .mime_str("application/octet-stream")
                .expect("mime");
            req = req.multipart(reqwest::multipart::Form::new().part(truc_vdxp::FILE_FIELD, part));
        }
        let resp = req.send().await.expect("http");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, package: &[u8], from: &str, to: &str) -> (u16, Value) {
        let hash: String = {
            use sha2::Digest;
            sha2::Sha256::digest(package)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        self.call(
            "bogtvt",
            "secret-gtvt",
            op::SEND_EDOC,
            &[
                (param::FROM, from),
                (param::TO, to),
                (param::SERVICE_TYPE, value::SERVICE_EDOC),
                (param::MESSAGE_TYPE, value::MESSAGE_EDOC),
                (param::HASH_FILE, &hash),
            ],
            Some(package.to_vec()),
            None,
        )
        .await
    }

    async fn list(&self) -> Vec<Value> {
        let (status, body) = self
            .call(
                "botc",
                "secret-tc",
                op::GET_RECEIVED_EDOC_LIST,
                &[
                    (param::SERVICE_TYPE, value::SERVICE_EDOC),
                    (param::MESSAGE_TYPE, value::MESSAGE_EDOC),
                ],
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }
}

fn package() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples/valid/doc-basic.edxml"
    ))
    .expect("sample")
}

#[tokio::test]
async fn a_package_is_sent_listed_fetched_acknowledged_and_reported() {
    let s = start().await;
    let (status, body) = s
        .send(
            &package(),
            "000.00.05.G04",
            r#"["000.00.00.G12","000.00.00.G99"]"#,
        )
        .await;
    assert_eq!(
        (status, body["ErrorCode"].as_str()),
        (200, Some("0")),
        "{body}"
    );
    let sender_doc_id = body["DocId"].as_str().expect("DocId").to_owned();

    let items = s.list().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["from"], "000.00.05.G04");
    let doc_id = items[0]["docId"].as_str().expect("docId").to_owned();
    let (_, body) = s
        .call(
            "botc",
            "secret-tc",
            op::GET_EDOC,
            &[(param::DOC_ID, &doc_id)],
            None,
            None,
        )
        .await;
    let bytes = base64_simd::STANDARD
        .decode_to_vec(body["data"].as_str().expect("data"))
        .expect("base64");
    assert_eq!(bytes, package(), "byte for byte");
    // Another system cannot read it.
    let (_, body) = s
        .call(
            "bogtvt",
            "secret-gtvt",
            op::GET_EDOC,
            &[(param::DOC_ID, &doc_id)],
            None,
            None,
        )
        .await;
    assert_eq!(body["ErrorCode"], "NOT_FOUND");

    let (_, body) = s
        .call(
            "botc",
            "secret-tc",
            op::UPDATE_STATUS,
            &[
                (param::DOC_ID, &doc_id),
                (param::STATUS, value::STATUS_DONE),
            ],
            None,
            None,
        )
        .await;
    assert_eq!(body["ErrorCode"], "0");
    assert!(
        s.list().await.is_empty(),
        "done removes it from the pending list"
    );

    let (_, body) = s
        .call(
            "bogtvt",
            "secret-gtvt",
            op::GET_SENT_EDOC_LIST,
            &[(param::DOC_ID, &sender_doc_id)],
            None,
            None,
        )
        .await;
    let lines = body["data"].as_array().expect("data");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["toCode"], "000.00.00.G12");
    assert_eq!(lines[0]["receiveStatus"], "done");
    assert_eq!(lines[1]["toCode"], "000.00.00.G99");
    assert_eq!(
        lines[1]["sendStatus"], "fail",
        "an unknown recipient is reported"
    );

    let (_, body) = s
        .call("botc", "secret-tc", op::GET_AGENCIES_LIST, &[], None, None)
        .await;
    assert!(body["data"]
        .as_array()
        .expect("data")
        .iter()
        .any(|a| a["code"] == "000.00.00.G04"));
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_and_damaged_files_are_refused() {
    let s = start().await;
    let (status, body) = s
        .call(
            "botc",
            "wrong-secret",
            op::GET_RECEIVED_EDOC_LIST,
            &[],
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, body["ErrorCode"].as_str()),
        (401, Some("AUTH_SIGNATURE"))
    );
    let old = truc_vdxp::format_timestamp(now_ms() - 3_600_000);
    let (status, body) = s
        .call(
            "botc",
            "secret-tc",
            op::GET_RECEIVED_EDOC_LIST,
            &[],
            None,
            Some(old),
        )
        .await;
    assert_eq!(
        (status, body["ErrorCode"].as_str()),
        (401, Some("AUTH_TIMESTAMP"))
    );
    let (_, body) = s
        .call(
            "bogtvt",
            "secret-gtvt",
            op::SEND_EDOC,
            &[
                (param::FROM, "000.00.05.G04"),
                (param::HASH_FILE, &"0".repeat(64)),
            ],
            Some(package()),
            None,
        )
        .await;
    assert_eq!(body["ErrorCode"], "HASH_MISMATCH");
    // A system cannot send as a unit it does not own.
    let (_, body) = s
        .send(&package(), "000.00.00.G12", r#"["000.00.00.G12"]"#)
        .await;
    assert_eq!(body["ErrorCode"], "NOT_OWNER");
}

#[tokio::test]
async fn fault_knobs_inject_outages_errors_duplicates_and_lost_acks() {
    let s = start().await;
    s.send(&package(), "000.00.05.G04", r#"["000.00.00.G12"]"#)
        .await;

    s.sim.set_faults(Faults {
        duplicate_list: true,
        ..Faults::default()
    });
    let items = s.list().await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["docId"], items[1]["docId"]);
    let doc_id = items[0]["docId"].as_str().expect("docId").to_owned();

    s.sim.set_faults(Faults {
        outage_until_ms: Some(now_ms() + 60_000),
        ..Faults::default()
    });
    let (status, _) = s
        .call(
            "botc",
            "secret-tc",
            op::GET_RECEIVED_EDOC_LIST,
            &[],
            None,
            None,
        )
        .await;
    assert_eq!(status, 503);

    // Through the control endpoint, as an operator or a test in another process would.
    let faults = serde_json::json!({ "error_rate": { "getEdoc": 1.0 } });
    let resp = s
        .http
        .post(format!("{}/_control/faults", s.base))
        .json(&faults)
        .send()
        .await
        .expect("control");
    assert!(resp.status().is_success());
    let (status, _) = s
        .call(
            "botc",
            "secret-tc",
            op::GET_EDOC,
            &[(param::DOC_ID, &doc_id)],
            None,
            None,
        )
        .await;
    assert_eq!(status, 500);

    s.sim.set_faults(Faults {
        lose_ack_rate: 1.0,
        ..Faults::default()
    });
    let (status, _) = s
        .call(
            "botc",
            "secret-tc",
            op::UPDATE_STATUS,
            &[
                (param::DOC_ID, &doc_id),
                (param::STATUS, value::STATUS_DONE),
            ],
            None,
            None,
        )
        .await;
    assert_eq!(status, 504, "the answer is lost");
    s.sim.set_faults(Faults::default());
    assert!(
        s.list().await.is_empty(),
        "but the acknowledgement was applied"
    );
    let counters = s.sim.counters();
    assert_eq!(counters.get("updateStatus.lost_ack"), Some(&1));
    assert_eq!(counters.get("getEdoc.injected_error"), Some(&1));
}
