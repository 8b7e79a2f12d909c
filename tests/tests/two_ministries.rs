//! Two ministries, each with its own relay, exchange a document and its status through the
//! national-axis simulator over real HTTP.

use std::time::Duration;

use truc_axis_sim::{Simulator, SystemConfig};
use truc_edxml::{
    CalendarDate, DocumentBuilder, DocumentId, StatusBuilder, StatusCode, VietnamTime,
};
use truc_tests::{code, vietnam_now, TestRelay};

const A_UNIT: &str = "000.00.05.G04"; // a level-2 unit of the transport ministry
const B_PARENT: &str = "000.00.07.G12"; // a level-2 unit of ministry G12
const B_CHILD: &str = "000.01.07.G12"; // one of its level-3 units

async fn next(inbox: &mut truc_client::Inbox, what: &str) -> truc_client::Delivery {
    tokio::time::timeout(Duration::from_secs(30), inbox.next())
        .await
        .unwrap_or_else(|_| panic!("{what} within 30 s"))
        .expect("inbox")
        .expect("a delivery")
}

/// Ministry A's relay (the transport ministry, with one level-2 unit) on the axis at `base`.
async fn ministry_a(base: &str) -> TestRelay {
    TestRelay::start_ministry(
        "000.00.00.G04",
        &[A_UNIT],
        &upstream(base, "bogtvt", "secret-a"),
    )
    .await
    .expect("relay of ministry A")
}

/// Ministry B's relay (the finance ministry, with one level-2 unit) on the axis at `base`.
async fn ministry_b(base: &str) -> TestRelay {
    TestRelay::start_ministry(
        "000.00.00.G12",
        &[B_PARENT],
        &upstream(base, "botc", "secret-b"),
    )
    .await
    .expect("relay of ministry B")
}

fn upstream(base: &str, system: &str, secret: &str) -> String {
    format!("[upstream]\nbase_url = \"{base}\"\nsystem_id = \"{system}\"\nsecret = \"{secret}\"\npoll_secs = 1\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_crosses_the_national_axis_and_its_status_comes_back() {
    let local = truc_axis_sim::LocalSimulator::start(vec![
        SystemConfig {
            id: "bogtvt".into(),
            secret: "secret-a".into(),
            organs: vec!["000.00.00.G04".into()],
            name: "Bộ GTVT".into(),
        },
        SystemConfig {
            id: "botc".into(),
            secret: "secret-b".into(),
            organs: vec!["000.00.00.G12".into()],
            name: "Bộ Tài chính".into(),
        },
    ])
    .await
    .expect("simulator");
    let (sim, base) = (local.sim.clone(), local.base_url.clone());

    let relay_a = ministry_a(&base).await;
    let relay_b = ministry_b(&base).await;
    let mut a = relay_a.adapter(A_UNIT).await.expect("adapter A");
    let mut b = relay_b.adapter(B_PARENT).await.expect("adapter B");

    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc = DocumentBuilder::new(
        code(A_UNIT),
        vec![code(B_CHILD)],
        date,
        "101",
        "TCĐBVN-KHĐT",
    )
    .subject("Đề nghị phối hợp")
    .build();
    let receipt = a.submit_document(&doc, None).await.expect("submit");
    assert_eq!(
        receipt.routes[0].kind, 3,
        "outside the ministry: the national axis"
    );

    // Ministry B's unit receives it, byte for byte, through its level-2 parent.
    let mut b_inbox = b.inbox(4).await.expect("inbox B");
    let got = next(&mut b_inbox, "the document at B").await;
    assert_eq!(got.recipient, B_CHILD);
    assert_eq!(got.sender, A_UNIT);
    assert_eq!(got.package, doc);
    b_inbox.ack(&got.delivery_id).await.expect("ack");

    // Its arrival (01, sent by relay B when B's adapter acknowledged it), then B's own
    // statuses 03 and 06, come back across the axis to A's unit.
    let mut a_inbox = a.inbox(4).await.expect("inbox A");
    let arrived = next(&mut a_inbox, "01 at A").await;
    assert_eq!(
        (
            arrived.kind.as_str(),
            arrived.status_code.as_str(),
            arrived.sender.as_str()
        ),
        ("status", "01", B_CHILD)
    );
    // Stamped like the recipients' own systems stamp theirs: Vietnam's clock, not UTC
    // (which would be seven hours behind).
    let stamp = truc_edxml::parse(&arrived.package)
        .expect("the 01 package reads")
        .status()
        .map(|s| s.timestamp.clone())
        .expect("a status");
    let stamped = VietnamTime::parse(&stamp).expect("a yyyy/MM/dd HH:mm:ss stamp");
    assert!(
        (stamped.unix_seconds() - vietnam_now().unix_seconds()).abs() < 3600,
        "01 stamped {stamp}, now is {} in Vietnam",
        vietnam_now()
    );
    a_inbox.ack(&arrived.delivery_id).await.expect("ack");
    for code_ in ["03", "06"] {
        let status = StatusBuilder::new(
            code(B_CHILD),
            DocumentId::new(&receipt.document_id),
            StatusCode::new(code_),
            &vietnam_now().to_string(),
        )
        .build();
        let r = b.submit_status(&status, None).await.expect("status");
        assert_eq!(r.routes[0].kind, 3);
        let back = next(&mut a_inbox, "the status at A").await;
        assert_eq!(back.kind, "status");
        assert_eq!(back.status_code, code_);
        assert_eq!(back.package, status);
        a_inbox.ack(&back.delivery_id).await.expect("ack");
    }

    // A's timeline: sent to the axis (with the axis's transport id), then 01, 03, 06 from B.
    let trace = a.trace(&receipt.document_id).await.expect("trace");
    assert!(
        trace
            .deliveries
            .iter()
            .any(|d| d.recipient == B_CHILD && d.state == "delivered"),
        "{:?}",
        trace.deliveries
    );
    let codes: Vec<&str> = trace
        .statuses
        .iter()
        .filter(|s| s.from == B_CHILD)
        .map(|s| s.code.as_str())
        .collect();
    assert_eq!(
        codes,
        ["01", "03", "06"],
        "A's timeline has every status of B"
    );

    // The axis agrees: its report for A's send says B's system took it.
    let axis_doc_id = trace
        .events
        .iter()
        .find_map(|e| {
            e.detail
                .strip_prefix("national axis docId ")
                .map(str::to_owned)
        })
        .expect("the axis's transport id is recorded");
    let a_client = axis_client(&base, "bogtvt", "secret-a");
    let report = truc_upstream::Upstream::sent_report(&a_client, &axis_doc_id)
        .await
        .expect("report");
    assert_eq!(
        (
            report[0].to_code.as_str(),
            report[0].receive_status.as_str()
        ),
        (B_CHILD, "done")
    );

    // The national directory is synchronised: bodies of other ministries are known, and a
    // code that is neither ours nor in it is refused as unknown.
    let mut remote = None;
    for _ in 0..50 {
        if let Ok(u) = a.lookup_unit("000.00.00.G12").await {
            remote = Some(u);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let remote = remote.expect("the directory lists ministry G12");
    assert_eq!(
        (remote.state.as_str(), remote.name.as_str()),
        ("remote", "Bộ Tài chính")
    );
    let to_nowhere =
        DocumentBuilder::new(code(A_UNIT), vec![code("000.00.00.G77")], date, "102", "X").build();
    let err = a
        .submit_document(&to_nowhere, None)
        .await
        .expect_err("unknown remote");
    assert_eq!(err.code(), Some("ROUTE_UNKNOWN_REMOTE"), "{err}");

    // A asks for the document back (13): the request crosses the axis to B's unit, whose
    // agreement (15) comes back to A.
    let recall = StatusBuilder::new(
        code(A_UNIT),
        DocumentId::new(&receipt.document_id),
        StatusCode::new("13"),
        &vietnam_now().to_string(),
    )
    .build();
    let r = a
        .submit_status(&recall, None)
        .await
        .expect("recall request");
    assert_eq!(
        r.routes
            .iter()
            .map(|r| (r.recipient.as_str(), r.kind))
            .collect::<Vec<_>>(),
        [(B_CHILD, 3)]
    );
    let asked = next(&mut b_inbox, "the recall request at B").await;
    assert_eq!(
        (
            asked.kind.as_str(),
            asked.status_code.as_str(),
            asked.recipient.as_str()
        ),
        ("status", "13", B_CHILD)
    );
    assert_eq!(asked.package, recall);
    b_inbox.ack(&asked.delivery_id).await.expect("ack");
    let agreed = StatusBuilder::new(
        code(B_CHILD),
        DocumentId::new(&receipt.document_id),
        StatusCode::new("15"),
        &vietnam_now().to_string(),
    )
    .build();
    b.submit_status(&agreed, None).await.expect("recall agreed");
    let back = next(&mut a_inbox, "the recall's answer at A").await;
    assert_eq!(
        (back.kind.as_str(), back.status_code.as_str()),
        ("status", "15")
    );
    a_inbox.ack(&back.delivery_id).await.expect("ack");

    // The axis carried one document and five statuses, each acknowledged by its receiver
    // (a relay acknowledges a package to the axis once stored, maybe after its adapter had
    // it: the last acknowledgement may still be on its way).
    let mut counters = sim.counters();
    for _ in 0..100 {
        if counters.get("updateStatus.ok").copied().unwrap_or(0) >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        counters = sim.counters();
    }
    assert_eq!(counters.get("sendEdoc.ok"), Some(&6), "{counters:?}");
    assert!(
        counters.get("updateStatus.ok").copied().unwrap_or(0) >= 6,
        "{counters:?}"
    );
    drop(local);
    relay_a.stop().await.expect("stop A");
    relay_b.stop().await.expect("stop B");
}

async fn start_sim(
    systems: Vec<SystemConfig>,
) -> (Simulator, String, truc_axis_sim::LocalSimulator) {
    let local = truc_axis_sim::LocalSimulator::start(systems)
        .await
        .expect("simulator");
    (local.sim.clone(), local.base_url.clone(), local)
}

fn system(id: &str, secret: &str, organ: &str) -> SystemConfig {
    SystemConfig::new(id, secret, organ)
}

async fn audit_actions(relay: &TestRelay) -> Vec<(String, String)> {
    relay
        .engine()
        .expect("in-process relay")
        .store()
        .audit_log(1, 1000)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| (e.action, e.detail))
        .collect()
}

/// Waits until the receiving relay has answered `fail` for a package `sender` sent.
async fn wait_for_fail(sender: &truc_upstream::VdxpUpstream, doc_id: &str) {
    use truc_upstream::Upstream;
    let mut status = String::new();
    for _ in 0..100 {
        status = sender.sent_report(doc_id).await.expect("report")[0]
            .receive_status
            .clone();
        if status == "fail" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "fail", "the relay answered fail for {doc_id}");
}

/// The reasons of the packages from the axis the relay refused, from its audit log.
async fn inbound_refusals(relay: &TestRelay) -> Vec<String> {
    audit_actions(relay)
        .await
        .into_iter()
        .filter(|(a, _)| a == "inbound_refused")
        .map(|(_, d)| d)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packages_from_the_axis_are_refused_and_recorded_and_the_poller_carries_on() {
    use truc_upstream::Upstream;
    let (sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("rogue", "secret-r", "000.00.00.G99"),
    ])
    .await;
    let relay = ministry_a(&base).await;
    let rogue = axis_client(&base, "rogue", "secret-r");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let garbage = rogue
        .send(
            b"%PDF-1.4 not a package",
            "000.00.00.G99",
            &[A_UNIT.into()],
            false,
        )
        .await
        .expect("send garbage");
    let to_nobody = DocumentBuilder::new(
        code("000.00.00.G99"),
        vec![code("000.00.98.G04")],
        date,
        "1",
        "X",
    )
    .build();
    let nobody = rogue
        .send(
            &to_nobody,
            "000.00.00.G99",
            &["000.00.98.G04".into()],
            false,
        )
        .await
        .expect("send to nobody");
    let fine =
        DocumentBuilder::new(code("000.00.00.G99"), vec![code(A_UNIT)], date, "2", "X").build();
    rogue
        .send(&fine, "000.00.00.G99", &[A_UNIT.into()], false)
        .await
        .expect("send fine");

    // One of its recipients is not a unit here: the others still get it.
    let mixed = DocumentBuilder::new(
        code("000.00.00.G99"),
        vec![code("000.00.98.G04"), code(A_UNIT)],
        date,
        "3",
        "X",
    )
    .build();
    rogue
        .send(
            &mixed,
            "000.00.00.G99",
            &["000.00.98.G04".into(), A_UNIT.into()],
            false,
        )
        .await
        .expect("send mixed");

    let mut a = relay.adapter(A_UNIT).await.expect("adapter");
    let mut inbox = a.inbox(4).await.expect("inbox");
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = next(&mut inbox, "the good packages").await;
        inbox.ack(&d.delivery_id).await.expect("ack");
        got.push(d.package);
    }
    assert!(got.iter().any(|p| *p == fine), "the good package arrives");
    assert!(
        got.iter().any(|p| *p == mixed),
        "the package with an unknown recipient too"
    );
    for doc_id in [&garbage, &nobody] {
        wait_for_fail(&rogue, doc_id).await;
    }
    let refused = inbound_refusals(&relay).await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().any(|d| d.contains("EDXML_MALFORMED")));
    assert!(refused.iter().any(|d| d.contains("ROUTE_UNKNOWN_UNIT")));
    let unknown: Vec<_> = audit_actions(&relay)
        .await
        .into_iter()
        .filter(|(a, _)| a == "inbound_recipients_unknown")
        .collect();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].1.contains("000.00.98.G04"), "{unknown:?}");
    assert!(!unknown[0].1.contains(A_UNIT), "{unknown:?}");
    assert!(sim.counters().get("updateStatus.ok").copied().unwrap_or(0) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_from_a_body_the_directory_does_not_list_yet_is_answered_all_the_same() {
    use truc_upstream::Upstream;
    let (sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("botc", "secret-b", "000.00.00.G12"),
        system("newcomer", "secret-n", "000.00.00.G77"),
    ])
    .await;
    // Connected, but the national directory has not caught up with it.
    sim.set_faults(truc_axis_sim::Faults {
        unlisted: vec!["000.00.00.G77".into()],
        ..truc_axis_sim::Faults::default()
    });
    let relay = ministry_a(&base).await;
    let mut a = relay.adapter(A_UNIT).await.expect("adapter");
    let mut listed = false;
    for _ in 0..50 {
        if a.lookup_unit("000.00.00.G12").await.is_ok() {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "the directory is synchronised");
    assert!(
        a.lookup_unit("000.00.00.G77").await.is_err(),
        "premise: the newcomer is not in it"
    );

    let newcomer = axis_client(&base, "newcomer", "secret-n");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc =
        DocumentBuilder::new(code("000.00.00.G77"), vec![code(A_UNIT)], date, "1", "NEW").build();
    newcomer
        .send(&doc, "000.00.00.G77", &[A_UNIT.into()], false)
        .await
        .expect("send");
    let mut inbox = a.inbox(4).await.expect("inbox");
    let got = next(&mut inbox, "the newcomer's document").await;
    assert_eq!(got.package, doc);
    inbox.ack(&got.delivery_id).await.expect("ack");
    // The acknowledgement is taken (the stream does not end with an error)...
    match tokio::time::timeout(Duration::from_secs(2), inbox.next()).await {
        Err(_) => {}
        Ok(other) => panic!("nothing more on the stream: {other:?}"),
    }
    // ...and the arrival (01) goes up to the newcomer.
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses = newcomer.list_received(true).await.expect("list");
        if !statuses.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let status = newcomer
        .fetch(&statuses[0].doc_id)
        .await
        .expect("fetch the status");
    let meta = truc_edxml::parse(&status).expect("a status package");
    let status = meta.status().expect("a status");
    assert_eq!(status.status_code.as_str(), "01");
    assert_eq!(
        status
            .response_for
            .document_id
            .as_ref()
            .map(|d| d.to_string()),
        Some(got.document_id)
    );
}

/// Waits until `document_id`'s timeline at `client`'s relay has an event of `kind` for
/// `recipient`; returns its detail.
async fn wait_for_event(
    client: &mut truc_client::Client,
    document_id: &str,
    kind: &str,
    recipient: &str,
) -> String {
    for _ in 0..300 {
        let trace = client.trace(document_id).await.expect("trace");
        if let Some(e) = trace
            .events
            .iter()
            .find(|e| e.kind == kind && e.recipient == recipient)
        {
            return e.detail.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no {kind} event for {recipient} in the timeline of {document_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_recipients_systems_did_with_a_package_sent_up_reaches_its_timeline() {
    let (_sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("botc", "secret-b", "000.00.00.G12"),
    ])
    .await;
    let relay_a = ministry_a(&base).await;
    let relay_b = ministry_b(&base).await;
    let mut a = relay_a.adapter(A_UNIT).await.expect("adapter A");
    let mut b = relay_b.adapter(B_PARENT).await.expect("adapter B");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    // One for a unit of B, one for a code B's registry does not have (B's relay refuses it).
    let taken = DocumentBuilder::new(code(A_UNIT), vec![code(B_CHILD)], date, "1", "X").build();
    let refused =
        DocumentBuilder::new(code(A_UNIT), vec![code("000.00.98.G12")], date, "2", "X").build();
    let taken_id = a
        .submit_document(&taken, None)
        .await
        .expect("submitted")
        .document_id;
    let refused_id = a
        .submit_document(&refused, None)
        .await
        .expect("submitted")
        .document_id;
    let mut inbox = b.inbox(4).await.expect("inbox B");
    let got = next(&mut inbox, "A's document at B").await;
    assert_eq!(got.document_id, taken_id);
    inbox.ack(&got.delivery_id).await.expect("ack");

    let detail = wait_for_event(&mut a, &refused_id, "axis_refused", "000.00.98.G12").await;
    assert!(detail.contains("refused"), "{detail}");
    wait_for_event(&mut a, &taken_id, "axis_received", B_CHILD).await;
    let trace = a.trace(&taken_id).await.expect("trace");
    assert!(
        !trace.events.iter().any(|e| e.kind == "axis_refused"),
        "{:?}",
        trace.events
    );
}

/// The relay's count of packages whose transport reports it follows, from its `/metrics`.
async fn followed(relay: &TestRelay) -> f64 {
    relay
        .metric("truc_axis_transport_reports_followed", &[])
        .await
        .expect("metrics")
}

/// Waits until the relay follows `n` packages' transport reports.
async fn wait_followed(relay: &TestRelay, n: f64) {
    let mut now = -1.0;
    for _ in 0..150 {
        now = followed(relay).await;
        if now == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("following {now} packages, not {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_reports_are_followed_again_after_a_crash() {
    let (_sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("botc", "secret-b", "000.00.00.G12"),
    ])
    .await;
    let mut relay_a = TestRelay::spawn_ministry_process(
        "000.00.00.G04",
        &[A_UNIT],
        &upstream(&base, "bogtvt", "secret-a"),
    )
    .await
    .expect("relay process of ministry A");
    let mut a = relay_a.adapter(A_UNIT).await.expect("adapter A");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc = DocumentBuilder::new(code(A_UNIT), vec![code(B_CHILD)], date, "9", "X").build();
    let id = a
        .submit_document(&doc, None)
        .await
        .expect("submitted")
        .document_id;
    // Sent up and followed; ministry B's system has not taken it (its relay is not
    // running yet) when relay A is killed.
    wait_followed(&relay_a, 1.0).await;
    relay_a
        .restart_process()
        .await
        .expect("restart after SIGKILL");

    let relay_b = ministry_b(&base).await;
    let mut b = relay_b.adapter(B_PARENT).await.expect("adapter B");
    let mut inbox = b.inbox(4).await.expect("inbox B");
    let got = next(&mut inbox, "A's document at B").await;
    assert_eq!(got.document_id, id);
    inbox.ack(&got.delivery_id).await.expect("ack");

    // The restarted relay still follows the package, and hears that B's system took it.
    let mut a = relay_a.adapter(A_UNIT).await.expect("adapter A again");
    wait_for_event(&mut a, &id, "axis_received", B_CHILD).await;
    let trace = a.trace(&id).await.expect("trace");
    assert_eq!(
        trace
            .events
            .iter()
            .filter(|e| e.kind == "axis_received")
            .count(),
        1,
        "{:?}",
        trace.events
    );
    // Done with: no longer followed, nor kept in the store for the next start.
    wait_followed(&relay_a, 0.0).await;
    let store_dir = relay_a.dir.path().join("store");
    let mut kept = Vec::new();
    for _ in 0..5 {
        relay_a.signal("TERM").expect("stop relay A");
        relay_a
            .wait_exit(Duration::from_secs(30))
            .await
            .expect("relay A stops");
        let store = truc_store::SledStore::open(&store_dir, truc_store::StoreConfig::default())
            .expect("open A's store");
        kept = truc_store::Store::settings(&store, "axis-transport-reports")
            .await
            .expect("settings");
        store.close().expect("close");
        if kept.is_empty() {
            break;
        }
        // The removal is not waited for: a stop right after the gauge moved may cut it
        // off. Then the next start follows the package again, finds its outcome in the
        // timeline at its first look (5 s after the start) and forgets it.
        relay_a.restart_process().await.expect("restart");
        tokio::time::sleep(Duration::from_secs(7)).await;
    }
    assert!(kept.is_empty(), "forgotten by the store too: {kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_secret_is_reported_to_operators_not_hidden_in_retries() {
    let (_sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("botc", "secret-b", "000.00.00.G12"),
    ])
    .await;
    let relay = TestRelay::start_ministry(
        "000.00.00.G04",
        &[A_UNIT],
        &upstream(&base, "bogtvt", "a-wrong-secret"),
    )
    .await
    .expect("relay");
    let mut a = relay.adapter(A_UNIT).await.expect("adapter");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc = DocumentBuilder::new(code(A_UNIT), vec![code(B_CHILD)], date, "7", "X").build();
    let receipt = a
        .submit_document(&doc, None)
        .await
        .expect("accepted locally");
    let mut alerts = Vec::new();
    for _ in 0..50 {
        alerts = audit_actions(&relay)
            .await
            .into_iter()
            .filter(|(a, _)| a == "credentials_rejected")
            .collect();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alerts.is_empty(), "an audit entry tells operators");
    assert!(
        alerts[0].1.contains("secret rejected by the national axis"),
        "{:?}",
        alerts[0]
    );
    // The package is not burnt through retries: it waits, with no failed attempt counted.
    let trace = a.trace(&receipt.document_id).await.expect("trace");
    let d = trace
        .deliveries
        .iter()
        .find(|d| d.recipient == B_CHILD)
        .expect("delivery");
    assert!(matches!(d.state.as_str(), "queued" | "claimed"), "{d:?}");
    assert!(d.last_error.is_empty(), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_the_axis_never_takes_is_given_up_at_the_end_of_its_retry_age() {
    let (_sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("botc", "secret-b", "000.00.00.G12"),
    ])
    .await;
    // A secret the axis never accepts, and deliveries given up after 2 s.
    let relay = TestRelay::start_ministry_with(
        "000.00.00.G04",
        &[A_UNIT],
        &upstream(&base, "bogtvt", "a-wrong-secret"),
        "retry_max_age_secs = 2\n",
    )
    .await
    .expect("relay");
    let mut a = relay.adapter(A_UNIT).await.expect("adapter");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let doc = DocumentBuilder::new(code(A_UNIT), vec![code(B_CHILD)], date, "8", "X").build();
    let receipt = a
        .submit_document(&doc, None)
        .await
        .expect("accepted locally");
    // The link pauses 30 s after the axis refuses its credentials, then claims again.
    let mut state = String::new();
    for _ in 0..400 {
        let trace = a.trace(&receipt.document_id).await.expect("trace");
        if let Some(d) = trace.deliveries.iter().find(|d| d.recipient == B_CHILD) {
            state = d.state.clone();
            if state == "dead" {
                assert!(d.last_error.contains("UPSTREAM_CREDENTIALS"), "{d:?}");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("still {state} after its retry age: it would wait for ever");
}

/// A client of the axis speaking for another ministry's system, as its relay would.
fn axis_client(base: &str, system: &str, secret: &str) -> truc_upstream::VdxpUpstream {
    truc_upstream::VdxpUpstream::new(truc_upstream::UpstreamConfig {
        base_url: base.to_owned(),
        system_id: system.into(),
        secret: secret.into(),
        ca_pem: None,
        client_identity_pem: None,
        timeout: Duration::from_secs(5),
        breaker_max_open: Duration::from_secs(300),
    })
    .expect("client")
}

/// The lifecycle a recipient reports, in order.
const LIFECYCLE: [&str; 5] = ["01", "03", "04", "05", "06"];

/// Each document's lifecycle from B's unit, stamped now, interleaved: every document's 01,
/// then every 03, and so on.
fn burst_of_lifecycles(documents: &[String]) -> Vec<Vec<u8>> {
    let stamp = vietnam_now().to_string();
    LIFECYCLE
        .iter()
        .flat_map(|code_| {
            documents.iter().map(|doc| {
                StatusBuilder::new(
                    code(B_CHILD),
                    DocumentId::new(doc),
                    StatusCode::new(code_),
                    &stamp,
                )
                .build()
            })
        })
        .collect()
}

/// The order in which `(document, code)` pairs came, per document.
fn codes_per_document(
    seen: &[(String, String)],
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut per_document = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (doc, code_) in seen {
        per_document
            .entry(doc.clone())
            .or_default()
            .push(code_.clone());
    }
    per_document
}

/// Another ministry answers with a burst of statuses (after an outage of its link, say):
/// they wait on the axis together, and the relay fetches them concurrently. Each
/// document's statuses must still reach its sender's adapter, and its timeline, in the
/// order the axis lists them — not 06 before 01 because one fetch was faster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_from_the_axis_reach_the_sender_in_the_order_they_were_sent() {
    use truc_upstream::Upstream;
    let (_sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("botc", "secret-b", "000.00.00.G12"),
    ])
    .await;
    let relay = ministry_a(&base).await;
    let mut a = relay.adapter(A_UNIT).await.expect("adapter");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let mut documents = Vec::new();
    for number in 1..=4 {
        let doc = DocumentBuilder::new(
            code(A_UNIT),
            vec![code(B_CHILD)],
            date,
            &number.to_string(),
            "TCĐBVN-KHĐT",
        )
        .build();
        let receipt = a.submit_document(&doc, None).await.expect("submit");
        documents.push(receipt.document_id);
    }

    // Ministry B's system sends each document's lifecycle, interleaved, in one burst.
    let b = axis_client(&base, "botc", "secret-b");
    for status in burst_of_lifecycles(&documents) {
        b.send(&status, B_CHILD, &[A_UNIT.into()], true)
            .await
            .expect("send status");
    }

    let mut inbox = a.inbox(32).await.expect("inbox");
    let mut seen = Vec::new();
    while seen.len() < LIFECYCLE.len() * documents.len() {
        let got = next(&mut inbox, "a status").await;
        assert_eq!(got.kind, "status");
        let answered = truc_edxml::parse(&got.package)
            .expect("reads")
            .document_id()
            .expect("answers a document")
            .to_string();
        seen.push((answered, got.status_code.clone()));
        inbox.ack(&got.delivery_id).await.expect("ack");
    }
    for (doc, codes) in codes_per_document(&seen) {
        assert_eq!(
            codes, LIFECYCLE,
            "delivered to the sender for {doc}: {seen:?}"
        );
    }
    for doc in &documents {
        let trace = a.trace(doc).await.expect("trace");
        let codes: Vec<&str> = trace.statuses.iter().map(|s| s.code.as_str()).collect();
        assert_eq!(codes, LIFECYCLE, "the timeline of {doc}");
    }
    relay.stop().await.expect("stop");
}

/// A unit answers several documents of another ministry in quick succession: the relay
/// sends what it has queued concurrently, but each document's statuses in the order they
/// were submitted, so the axis lists them in that order for the other ministry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_for_another_ministry_leave_in_the_order_they_were_submitted() {
    use truc_upstream::Upstream;
    let (sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("botc", "secret-b", "000.00.00.G12"),
    ])
    .await;
    // Each call to the axis takes a moment: statuses queue up behind the first send and
    // leave together in the next batch.
    sim.set_faults(truc_axis_sim::Faults {
        latency_ms: 30,
        ..truc_axis_sim::Faults::default()
    });
    let relay = ministry_b(&base).await;
    let mut b = relay.adapter(B_PARENT).await.expect("adapter");
    let documents: Vec<String> = (1..=4)
        .map(|n| format!("{A_UNIT},2026/11/21,{n}/TCĐBVN-KHĐT"))
        .collect();
    for status in burst_of_lifecycles(&documents) {
        let receipt = b.submit_status(&status, None).await.expect("status");
        assert_eq!(receipt.routes[0].kind, 3, "up to the national axis");
    }

    // Ministry A's system reads what the axis holds for it, in the axis's order.
    let a = axis_client(&base, "bogtvt", "secret-a");
    let mut listed = Vec::new();
    for _ in 0..200 {
        listed = a.list_received(true).await.expect("list");
        if listed.len() == LIFECYCLE.len() * documents.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed.len(), LIFECYCLE.len() * documents.len());
    let mut seen = Vec::new();
    for item in &listed {
        let bytes = a.fetch(&item.doc_id).await.expect("fetch");
        let meta = truc_edxml::parse(&bytes).expect("reads");
        let status = meta.status().expect("a status");
        seen.push((
            meta.document_id().expect("answers").to_string(),
            status.status_code.as_str().to_owned(),
        ));
    }
    for (doc, codes) in codes_per_document(&seen) {
        assert_eq!(codes, LIFECYCLE, "listed by the axis for {doc}: {seen:?}");
    }
    relay.stop().await.expect("stop");
}

/// Packages from the axis are held to the relay's own limits while they arrive: one over
/// `max_package_bytes` is refused (`fail` on the axis, `EDXML_TOO_LARGE` in the audit log)
/// without being read to its end, and one over `memory_package_bytes` is staged on disk
/// and arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_from_the_axis_are_held_to_the_relays_limits() {
    use truc_upstream::Upstream;
    let (_sim, base, _stop) = start_sim(vec![
        system("bogtvt", "secret-a", "000.00.00.G04"),
        system("botc", "secret-b", "000.00.00.G12"),
    ])
    .await;
    let relay = TestRelay::start_ministry_with(
        "000.00.00.G04",
        &[A_UNIT],
        &upstream(&base, "bogtvt", "secret-a"),
        "max_package_bytes = 3145728\nmemory_package_bytes = 65536",
    )
    .await
    .expect("relay");
    let b = axis_client(&base, "botc", "secret-b");
    let date = CalendarDate::new(2026, 11, 21).expect("date");
    let with_attachment = |number: &str, len: usize| {
        DocumentBuilder::new(code(B_CHILD), vec![code(A_UNIT)], date, number, "CT")
            .attachment(truc_edxml::AttachmentSource::new(
                "ho-so.pdf",
                (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
            ))
            .build()
    };
    let too_large = with_attachment("1", 3 * 1024 * 1024);
    assert!(too_large.len() > 3 * 1024 * 1024);
    let staged = with_attachment("2", 1024 * 1024);
    assert!(staged.len() > 64 * 1024 && staged.len() < 3 * 1024 * 1024);
    let too_large_id = b
        .send(&too_large, B_CHILD, &[A_UNIT.into()], false)
        .await
        .expect("send the large one");
    b.send(&staged, B_CHILD, &[A_UNIT.into()], false)
        .await
        .expect("send the staged one");

    let mut a = relay.adapter(A_UNIT).await.expect("adapter");
    let mut inbox = a.inbox(4).await.expect("inbox");
    let got = next(&mut inbox, "the package under the limit").await;
    assert_eq!(
        got.package, staged,
        "byte for byte through the staging file"
    );
    inbox.ack(&got.delivery_id).await.expect("ack");

    wait_for_fail(&b, &too_large_id).await;
    let refused = inbound_refusals(&relay).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("EDXML_TOO_LARGE"), "{refused:?}");
    relay.stop().await.expect("stop");
}
