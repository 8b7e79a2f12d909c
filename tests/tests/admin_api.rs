//! The admin API of a real relay over HTTP: its doors (tokens), its answers to bad input,
//! unit changes that take effect and are audited, and metrics that move as documents flow
//! and cover every metric the deploy/ alert rules and dashboard use.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use truc_edxml::{CalendarDate, DocumentBuilder};
use truc_tests::{code, TestRelay, ADMIN_TOKEN};

const A: &str = "000.00.05.G04";
const B: &str = "000.00.07.G04";

fn date() -> CalendarDate {
    CalendarDate::new(2026, 11, 21).expect("date")
}

struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    fn of(relay: &TestRelay) -> Self {
        Admin {
            base: format!("http://{}", relay.admin_addr.expect("admin API")),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let response = request.send().await.expect("admin API answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, body) = self
            .call(reqwest::Method::GET, path, Some(ADMIN_TOKEN), None)
            .await;
        (
            s,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let (s, text) = self.call(method, path, Some(ADMIN_TOKEN), body).await;
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("(no error code)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_checks_tokens_and_refuses_bad_input_with_stable_codes() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let admin = Admin::of(&relay);
    use reqwest::Method as M;

    // Open doors: liveness, readiness, metrics.
    let (s, body) = admin.call(M::GET, "/healthz", None, None).await;
    assert_eq!((s, body.as_str()), (200, "ok\n"));
    let (s, body) = admin.call(M::GET, "/readyz", None, None).await;
    assert_eq!(s, 200, "{body}");
    let ready: truc_admin::Readiness = serde_json::from_str(&body).expect("readiness");
    assert!(ready.ready && ready.store && ready.listeners && !ready.shutting_down);
    let (s, _) = admin.call(M::GET, "/metrics", None, None).await;
    assert_eq!(s, 200);

    // Closed doors: no token, a wrong one, a malformed header.
    for token in [None, Some("not-the-token"), Some("")] {
        let (s, body) = admin.call(M::GET, "/api/v1/status", token, None).await;
        assert_eq!(s, 401, "{token:?}: {body}");
        let v: Value = serde_json::from_str(&body).expect("json error");
        assert_eq!(error_code(&v), "ADMIN_UNAUTHORIZED");
    }
    let (s, body) = admin.get("/api/v1/status").await;
    assert_eq!(s, 200, "{body}");
    let status: truc_admin::StatusReport = serde_json::from_value(body).expect("status");
    assert_eq!(status.ministry.as_str(), "000.00.00.G04");
    assert_eq!(
        status.units.total, 284,
        "57 level-2, 226 level-3 and the ministry"
    );

    // Bad input of every kind: a clear code, nothing changed.
    let remove_unknown = format!(r#"{{"remove":["{}"]}}"#, "ab".repeat(32));
    let cases: Vec<(M, &str, Option<&str>, u16, &str)> = vec![
        (
            M::POST,
            "/api/v1/units",
            Some("{not json"),
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::POST,
            "/api/v1/units",
            Some(r#"{"code":"000.00.88.G04","name":"X","colour":"red"}"#),
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::POST,
            "/api/v1/units",
            Some(r#"{"code":"000.00.05.G04","name":"again"}"#),
            409,
            "ADMIN_CONFLICT",
        ),
        (
            M::POST,
            "/api/v1/units",
            Some(r#"{"code":"000.00.88.G99","name":"not ours"}"#),
            400,
            "RELAY_CONFIG",
        ),
        (
            M::GET,
            "/api/v1/units?bogus=1",
            None,
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::GET,
            "/api/v1/units/not-a-code",
            None,
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::GET,
            "/api/v1/units/000.00.99.G04",
            None,
            404,
            "ADMIN_NOT_FOUND",
        ),
        (M::GET, "/api/v1/nothing-here", None, 404, "ADMIN_NOT_FOUND"),
        (
            M::DELETE,
            "/api/v1/units",
            None,
            405,
            "ADMIN_METHOD_NOT_ALLOWED",
        ),
        (
            M::POST,
            "/api/v1/units/000.00.05.G04/certificates",
            Some(r#"{"add":["zz"]}"#),
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::POST,
            "/api/v1/units/000.00.05.G04/certificates",
            Some(remove_unknown.as_str()),
            404,
            "ADMIN_NOT_FOUND",
        ),
        (
            M::GET,
            "/api/v1/trace?id=nothing",
            None,
            404,
            "ADMIN_NOT_FOUND",
        ),
        (M::GET, "/api/v1/trace", None, 400, "ADMIN_BAD_REQUEST"),
        (
            M::POST,
            "/api/v1/dead-letters/not-an-id/000.00.05.G04/requeue",
            None,
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::POST,
            "/api/v1/dead-letters/01ARZ3NDEKTSV4RRFFQ69G5FAV/000.00.05.G04/requeue",
            None,
            404,
            "STORE_NOT_FOUND",
        ),
        (
            M::POST,
            "/api/v1/dead-letters/01ARZ3NDEKTSV4RRFFQ69G5FAV/000.00.05.G04/drop",
            Some(r#"{"reason":"  "}"#),
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::POST,
            "/api/v1/backup",
            Some(r#"{"dir":"relative/dir"}"#),
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::GET,
            "/api/v1/stats?from=2026-12-01&to=2026-11-01",
            None,
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::GET,
            "/api/v1/stats?from=yesterday",
            None,
            400,
            "ADMIN_BAD_REQUEST",
        ),
        (
            M::GET,
            "/api/v1/overdue?today=2026-13-45",
            None,
            400,
            "ADMIN_BAD_REQUEST",
        ),
        // In-process relays do not own the process's logging.
        (
            M::PUT,
            "/api/v1/log-level",
            Some(r#"{"level":"debug"}"#),
            503,
            "ADMIN_UNAVAILABLE",
        ),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let (s, v) = admin.send(method.clone(), path, body).await;
        assert_eq!(
            (s, error_code(&v)),
            (want_status, want_code),
            "{method} {path}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
            "a message that says what is wrong: {v}"
        );
    }
    // Nothing was changed by any of them.
    let (_, audit) = admin.get("/api/v1/audit?limit=1000").await;
    let by_admin = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("admin:")))
        .count();
    assert_eq!(by_admin, 0, "{audit}");

    // The OpenAPI description is served and lists what the router answers.
    let (s, doc) = admin.get("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/v1/dead-letters/{message_id}/{recipient}/requeue"].is_object());
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_inbox_ends_when_its_unit_is_suspended_or_its_certificate_removed() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let admin = Admin::of(&relay);
    use reqwest::Method as M;
    let mut a = relay.adapter(A).await.expect("adapter A");
    let mut b = relay.adapter(B).await.expect("adapter B");

    // B's stream is open and working when B is suspended: it ends at once.
    let mut b_inbox = b.inbox(4).await.expect("B's inbox");
    let first = DocumentBuilder::new(code(A), vec![code(B)], date(), "1", "TEST").build();
    a.submit_document(&first, None).await.expect("submit");
    let got = truc_tests::next_delivery(&mut b_inbox).await;
    b_inbox.ack(&got.delivery_id).await.expect("ack");
    let (s, v) = admin
        .send(M::POST, &format!("/api/v1/units/{B}/suspend"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let ended = tokio::time::timeout(Duration::from_secs(10), b_inbox.next())
        .await
        .expect("the stream ends without waiting for B's next call")
        .expect_err("with an error");
    assert_eq!(ended.code(), Some("AUTH_UNIT_SUSPENDED"), "{ended}");

    // A's stream is open when its certificate is removed: what comes for A afterwards is
    // not handed to that stream.
    let (s, v) = admin
        .send(M::POST, &format!("/api/v1/units/{B}/activate"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let mut a_inbox = a.inbox(4).await.expect("A's inbox");
    let old = relay.cert_of(A).expect("A's certificate");
    let (s, v) = admin
        .send(
            M::POST,
            &format!("/api/v1/units/{A}/certificates"),
            Some(&format!(r#"{{"remove":["{}"]}}"#, old.fingerprint)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut b = relay.adapter(B).await.expect("adapter B again");
    let after = DocumentBuilder::new(code(B), vec![code(A)], date(), "2", "TEST").build();
    b.submit_document(&after, None).await.expect("submit to A");
    let ended = tokio::time::timeout(Duration::from_secs(10), a_inbox.next())
        .await
        .expect("the stream ends")
        .expect_err("with an error, not the document");
    assert_eq!(ended.code(), Some("AUTH_UNKNOWN_CERTIFICATE"), "{ended}");

    // B's certificate cannot be given to A as well: one certificate, one unit.
    let b_cert = relay.cert_of(B).expect("B's certificate");
    let (s, v) = admin
        .send(
            M::POST,
            &format!("/api/v1/units/{A}/certificates"),
            Some(&format!(r#"{{"add":["{}"]}}"#, b_cert.fingerprint)),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "AUTH_CREDENTIAL_IN_USE", "{v}");
    let mut b = relay.adapter(B).await.expect("adapter B");
    let to_a = DocumentBuilder::new(code(B), vec![code(A)], date(), "3", "TEST").build();
    b.submit_document(&to_a, None)
        .await
        .expect("B's certificate still names B");
    relay.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_changes_take_effect_at_once_and_are_audited_with_the_token_name() {
    let relay = TestRelay::start(&[A, B]).await.expect("relay");
    let admin = Admin::of(&relay);
    use reqwest::Method as M;
    let mut a = relay.adapter(A).await.expect("adapter A");

    // Suspended: B's adapter is refused, mail for B is held.
    let (s, v) = admin
        .send(M::POST, &format!("/api/v1/units/{B}/suspend"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["unit"]["state"], "suspended");
    let doc = DocumentBuilder::new(code(A), vec![code(B)], date(), "1", "TEST")
        .subject("held while suspended")
        .build();
    let receipt = a.submit_document(&doc, None).await.expect("submit");
    assert_eq!(receipt.routes[0].kind, 4, "held");
    let mut b = relay.adapter(B).await.expect("adapter B connects");
    let refused = b.inbox(4).await;
    let refused_code = match refused {
        Ok(mut inbox) => inbox
            .next()
            .await
            .err()
            .and_then(|e| e.code().map(str::to_owned)),
        Err(e) => e.code().map(str::to_owned),
    };
    assert_eq!(refused_code.as_deref(), Some("AUTH_UNIT_SUSPENDED"));

    // Activated: the held document is released to B's inbox.
    let (s, v) = admin
        .send(M::POST, &format!("/api/v1/units/{B}/activate"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["released"], 1, "{v}");
    let mut inbox = b.inbox(4).await.expect("inbox");
    let got = tokio::time::timeout(Duration::from_secs(20), inbox.next())
        .await
        .expect("in time")
        .expect("inbox")
        .expect("delivery");
    assert_eq!(got.package, doc);
    inbox.ack(&got.delivery_id).await.expect("ack");

    // A certificate rotation: the new one works once added, the old one stops once removed.
    let old = relay.cert_of(A).expect("A's certificate");
    let new = relay.issue("adapter A, renewed", &[]).expect("cert");
    let (s, v) = admin
        .send(
            M::POST,
            &format!("/api/v1/units/{A}/certificates"),
            Some(&format!(
                r#"{{"add":["{}"]}}"#,
                new.fingerprint.to_uppercase()
            )),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut renewed = relay.client_with(&new).await.expect("connect");
    renewed
        .submit_document(
            &DocumentBuilder::new(code(A), vec![code(B)], date(), "2", "TEST").build(),
            None,
        )
        .await
        .expect("the new certificate is accepted");
    let (s, v) = admin
        .send(
            M::POST,
            &format!("/api/v1/units/{A}/certificates"),
            Some(&format!(r#"{{"remove":["{}"]}}"#, old.fingerprint)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut stale = relay.client_with(&old).await.expect("connect");
    let err = stale
        .submit_document(
            &DocumentBuilder::new(code(A), vec![code(B)], date(), "3", "TEST").build(),
            None,
        )
        .await
        .expect_err("the old certificate is refused");
    assert_eq!(err.code(), Some("AUTH_UNKNOWN_CERTIFICATE"), "{err}");

    // A new unit, registered through the API, is routable at once.
    let (s, v) = admin
        .send(
            M::POST,
            "/api/v1/units",
            Some(r#"{"code":"000.00.88.G04","name":"Ban Quản lý dự án mới"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let r = renewed
        .submit_document(
            &DocumentBuilder::new(code(A), vec![code("000.00.88.G04")], date(), "4", "TEST")
                .build(),
            None,
        )
        .await
        .expect("routable");
    assert_eq!(r.routes[0].recipient, "000.00.88.G04");

    // Every change is in the audit log, by the token's name, and the chain verifies.
    let (_, audit) = admin.get("/api/v1/audit?limit=1000").await;
    let mine: Vec<(String, String)> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["actor"] == "admin:test")
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (action, target) in [
        ("unit.upsert", B),
        ("unit.certificates", A),
        ("unit.upsert", "000.00.88.G04"),
    ] {
        assert!(
            mine.iter().any(|(a, t)| a == action && t == target),
            "{action} {target} in {mine:?}"
        );
    }
    let (s, report) = admin.get("/api/v1/audit/verify").await;
    assert_eq!(s, 200);
    assert_eq!(report["first_bad"], Value::Null, "{report}");
    relay.stop().await.expect("stop");
}

/// `name{labels} value` lines of an OpenMetrics text, and the names its `# TYPE` lines
/// declare.
fn parse_metrics(text: &str) -> (BTreeMap<String, f64>, Vec<String>) {
    let mut samples = BTreeMap::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.extend(rest.split_whitespace().next().map(str::to_owned));
        } else if !line.starts_with('#') && !line.is_empty() {
            if let Some((series, value)) = line.rsplit_once(' ') {
                samples.insert(series.to_owned(), value.parse().unwrap_or(f64::NAN));
            }
        }
    }
    (samples, families)
}

/// The relay's `/metrics`, parsed by [`parse_metrics`].
async fn scrape_metrics(admin: &Admin) -> (BTreeMap<String, f64>, Vec<String>) {
    let (s, text) = admin
        .call(reqwest::Method::GET, "/metrics", None, None)
        .await;
    assert_eq!(s, 200);
    parse_metrics(&text)
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_documents_flow_and_cover_the_deploy_rules() {
    // A national axis that refuses this relay's secret: upstream calls and errors counted,
    // and the credentials alarm raised.
    let axis = truc_axis_sim::LocalSimulator::start(vec![truc_axis_sim::SystemConfig::new(
        "bogtvt",
        "the-real-secret",
        "000.00.00.G04",
    )])
    .await
    .expect("simulator");
    let upstream = format!(
        "[upstream]\nbase_url = \"{}\"\nsystem_id = \"bogtvt\"\nsecret = \"a-wrong-secret\"\npoll_secs = 1\n",
        axis.base_url
    );
    let relay = TestRelay::start_ministry("000.00.00.G04", &[A, B], &upstream)
        .await
        .expect("relay");
    let admin = Admin::of(&relay);
    let scrape = || scrape_metrics(&admin);
    let (before, _) = scrape().await;

    // A document from A to B, queued: the first scrape after it sees the queue.
    let mut a = relay.adapter(A).await.expect("adapter");
    let doc = DocumentBuilder::new(code(A), vec![code(B)], date(), "7", "TEST").build();
    a.submit_document(&doc, None).await.expect("submit");
    let submitted =
        r#"truc_submissions_total{kind="document",source="adapter",outcome="accepted"}"#;
    // Queued for B, whose adapter is not connected yet.
    let (queued, queue_families) = scrape().await;
    assert_eq!(
        sample(
            &queued,
            &format!(r#"truc_queue_depth{{destination="{B}",state="ready"}}"#)
        ),
        1.0,
        "{queued:?}"
    );
    assert!(
        sample(
            &queued,
            &format!(r#"truc_queue_oldest_age_seconds{{destination="{B}"}}"#)
        ) >= 0.0
    );
    let mut b = relay.adapter(B).await.expect("adapter B");
    let mut inbox = b.inbox(4).await.expect("inbox");
    let got = tokio::time::timeout(Duration::from_secs(20), inbox.next())
        .await
        .expect("in time")
        .expect("inbox")
        .expect("delivery");
    inbox.ack(&got.delivery_id).await.expect("ack");
    // A refused submission is counted too.
    let _ = a.submit_document(b"<not edxml", None).await;

    let mut after = BTreeMap::new();
    let mut families = Vec::new();
    let rejected = r#"truc_upstream_errors_total{operation="getReceivedEdocList",code="UPSTREAM_CREDENTIALS"}"#;
    for _ in 0..200 {
        (after, families) = scrape().await;
        if sample(&after, r#"truc_acks_total{destination_kind="inbox"}"#) >= 1.0
            && sample(&after, rejected) >= 1.0
            && sample(&after, "truc_upstream_credentials_rejected") == 1.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sample(&after, rejected) >= 1.0, "{after:?}");
    assert!(
        sample(
            &after,
            r#"truc_upstream_calls_total{operation="getReceivedEdocList"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &after,
            r#"truc_upstream_call_duration_seconds_count{operation="getReceivedEdocList"}"#
        ) >= 1.0
    );
    assert_eq!(sample(&after, "truc_upstream_credentials_rejected"), 1.0);
    assert_eq!(sample(&after, "truc_upstream_circuit_open"), 0.0);
    assert_eq!(sample(&after, submitted) - sample(&before, submitted), 1.0);
    assert_eq!(
        sample(
            &after,
            r#"truc_submissions_total{kind="document",source="adapter",outcome="refused"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&after, r#"truc_deliveries_total{destination_kind="inbox"}"#),
        1.0
    );
    assert_eq!(
        sample(&after, r#"truc_acks_total{destination_kind="inbox"}"#),
        1.0
    );
    assert_eq!(
        sample(&after, &format!(r#"truc_inbox_connections{{unit="{B}"}}"#)),
        1.0,
        "B's stream is open"
    );
    assert!(sample(&after, "truc_store_flush_duration_seconds_count") >= 1.0);
    // The accepted package was small: its payload segment was synced before its receipt.
    assert!(
        sample(&after, "truc_store_payload_syncs_total")
            > sample(&before, "truc_store_payload_syncs_total")
    );
    // Both submissions (accepted and refused) were timed.
    assert_eq!(
        sample(
            &after,
            r#"truc_submission_duration_seconds_count{kind="document"}"#
        ) - sample(
            &before,
            r#"truc_submission_duration_seconds_count{kind="document"}"#
        ),
        2.0,
        "{after:?}"
    );
    assert!(
        sample(
            &after,
            r#"truc_submission_duration_seconds_sum{kind="document"}"#
        ) > 0.0
    );
    assert!(sample(&after, "truc_store_disk_bytes") > 0.0);
    assert_eq!(sample(&after, "truc_ready"), 1.0);
    assert_eq!(
        sample(&after, r#"truc_build_info{version="0.1.0"}"#),
        1.0,
        "{after:?}"
    );
    drop(inbox);
    for _ in 0..100 {
        let now = scrape().await.0;
        if sample(&now, &format!(r#"truc_inbox_connections{{unit="{B}"}}"#)) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every metric the alert rules and the dashboard use is one the relay serves.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for file in [
        "deploy/prometheus/truc-alerts.yml",
        "deploy/grafana/truc-dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        let mut used: Vec<String> = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(at) = text[i..].find("truc_") {
            let start = i + at;
            let end = start
                + text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len() - start);
            // Only whole words (not inside another identifier).
            if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_')
            {
                used.push(text[start..end].to_owned());
            }
            i = end;
        }
        assert!(!used.is_empty(), "{file} uses no truc metric?");
        for name in used {
            let family = ["_bucket", "_count", "_sum", "_total", "_info"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                families
                    .iter()
                    .chain(&queue_families)
                    .any(|f| f == family || f == &name),
                "{file} uses {name}, which /metrics does not serve (families: {families:?})"
            );
        }
    }
    relay.stop().await.expect("stop");
}

/// An adapter acknowledging a steady stream of deliveries: the acknowledgements waiting for
/// the store stay few (each finished one is collected at once, not left to pile up in the
/// stream until it ends), and none is left once the stream is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_waiting_for_the_store_stay_few_under_a_steady_stream() {
    const DOCUMENTS: usize = 3_000;
    let relay = TestRelay::start_full(
        &[A, B],
        |_| {},
        "submits_per_second = 1000000\nsubmit_burst = 1000000\n",
    )
    .await
    .expect("relay");
    let admin = Admin::of(&relay);
    let pending = || async { sample(&scrape_metrics(&admin).await.0, "truc_inbox_acks_pending") };
    // Queued for B before its adapter connects, from 8 submitters.
    let mut submitters = Vec::new();
    for part in 0..8 {
        let mut a = relay.adapter(A).await.expect("adapter");
        submitters.push(tokio::spawn(async move {
            for i in (part..DOCUMENTS).step_by(8) {
                let doc =
                    DocumentBuilder::new(code(A), vec![code(B)], date(), &i.to_string(), "ACKS")
                        .build();
                a.submit_document(&doc, None).await.expect("submit");
            }
        }));
    }
    for s in submitters {
        s.await.expect("submitter");
    }

    let mut b = relay.adapter(B).await.expect("adapter");
    let mut inbox = b.inbox(128).await.expect("inbox");
    let mut most = 0.0f64;
    for n in 1..=DOCUMENTS {
        let d = inbox.next().await.expect("next").expect("delivery");
        inbox.ack(&d.delivery_id).await.expect("ack");
        if n % 100 == 0 {
            most = most.max(pending().await);
        }
    }
    // Finished acknowledgements left uncollected would count here until the stream ends:
    // under this load they reached the stream's limit of 2,048.
    assert!(
        most < 1024.0,
        "{most} acknowledgements waiting for the store at once"
    );
    inbox.close().await.expect("close");
    assert_eq!(pending().await, 0.0);
    relay.stop().await.expect("stop");
}

/// With `[retention]` set, a payload every recipient has is deleted after the period (its
/// record stays, and the metrics count it); a payload still waiting for its recipient is
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_payloads_are_deleted_after_the_retention_period() {
    let relay = TestRelay::start_ministry(
        "000.00.00.G04",
        &[A, B],
        "[retention]\npayload_secs = 1\ninterval_secs = 1\n",
    )
    .await
    .expect("relay");
    let admin = Admin::of(&relay);
    let store = relay.engine().expect("in-process relay").store().clone();
    let mut a = relay.adapter(A).await.expect("adapter A");
    let mut b = relay.adapter(B).await.expect("adapter B");
    let delivered = a
        .submit_document(
            &DocumentBuilder::new(code(A), vec![code(B)], date(), "R1", "RETENTION").build(),
            None,
        )
        .await
        .expect("submit");
    // A never opens its inbox: this one waits.
    let waiting = b
        .submit_document(
            &DocumentBuilder::new(code(B), vec![code(A)], date(), "R2", "RETENTION").build(),
            None,
        )
        .await
        .expect("submit");
    let mut inbox = b.inbox(4).await.expect("inbox");
    let got = tokio::time::timeout(Duration::from_secs(20), inbox.next())
        .await
        .expect("in time")
        .expect("inbox")
        .expect("delivery");
    inbox.ack(&got.delivery_id).await.expect("ack");

    let id = |s: &str| -> truc_store::MessageId { s.parse().expect("message id") };
    let mut purged = 0.0;
    for _ in 0..300 {
        purged = sample(
            &scrape_metrics(&admin).await.0,
            "truc_payloads_purged_total",
        );
        if purged >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(purged, 1.0, "one payload deleted by retention");
    let err = store
        .payload(id(&delivered.message_id))
        .await
        .expect_err("purged");
    assert_eq!(err.code(), "STORE_PURGED");
    let record = store
        .message(id(&delivered.message_id))
        .await
        .expect("message")
        .expect("the record stays");
    assert!(record.payload_purged);
    assert!(
        sample(
            &scrape_metrics(&admin).await.0,
            "truc_payloads_purged_bytes_total"
        ) >= record.size as f64
    );
    let kept = store
        .payload(id(&waiting.message_id))
        .await
        .expect("the waiting payload is kept")
        .read_all()
        .expect("read");
    assert_eq!(hex_sha256(&kept), waiting.sha256);
}

fn hex_sha256(bytes: &[u8]) -> String {
    truc_edxml::Sha256Digest::of(bytes).to_hex()
}
