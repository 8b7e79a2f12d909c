//! The engine over a real store: registry, routing, authorization, statuses back to senders.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use truc_edxml::{parse, OrgCode, OrgLevel};
use truc_relay::{
    sample_transport_ministry, Registry, RegistryFile, Relay, RouteDecision, Submitter, UnitState,
};
use truc_store::{Destination, PayloadInput, SledStore, Store, StoreConfig, Timestamp};

fn code(s: &str) -> OrgCode {
    OrgCode::parse(s).expect("code")
}

fn sample(name: &str) -> Vec<u8> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/samples");
    std::fs::read(format!("{root}/valid/{name}")).expect("sample")
}

async fn relay(dir: &std::path::Path) -> Relay {
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(dir, StoreConfig::default()).expect("store"));
    let ministry = code("000.00.00.G04");
    let registry = Arc::new(Registry::new(ministry.clone()));
    registry
        .import(
            store.as_ref(),
            &sample_transport_ministry(&ministry),
            "test",
        )
        .await
        .expect("import");
    Relay::new(store, registry)
}

fn adapter(unit: &str) -> Submitter {
    Submitter::Adapter {
        unit: code(unit),
        certificate: format!("fingerprint-of-{unit}"),
    }
}

#[test]
fn the_sample_registry_is_the_transport_ministry() {
    let ministry = code("000.00.00.G04");
    let file = sample_transport_ministry(&ministry);
    let level = |l| {
        file.units
            .iter()
            .filter(|u| u.code.level() == Some(l))
            .count()
    };
    assert_eq!(level(OrgLevel::Two), 57);
    assert_eq!(level(OrgLevel::Three), 226);
    let codes: BTreeSet<_> = file.units.iter().map(|u| u.code.clone()).collect();
    assert_eq!(codes.len(), file.units.len(), "codes are unique");
    for u in &file.units {
        if let Some(parent) = u.code.parent().filter(|p| p != &ministry) {
            assert!(
                codes.contains(&parent),
                "{} has no registered parent",
                u.code
            );
        }
    }
    // The sample packages' units are there.
    for c in [
        "000.00.05.G04",
        "000.00.07.G04",
        "000.00.09.G04",
        "000.03.05.G04",
    ] {
        assert!(codes.contains(&code(c)), "{c}");
    }
    // The file round-trips through TOML.
    let back = RegistryFile::from_toml(&file.to_toml()).expect("toml");
    assert_eq!(back, file);
}

#[tokio::test]
async fn routing_follows_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = relay(dir.path()).await;
    let r = relay.registry();
    assert_eq!(
        r.route(&code("000.00.07.G04")).expect("route"),
        RouteDecision::Local {
            inbox: code("000.00.07.G04")
        }
    );
    assert_eq!(
        r.route(&code("000.03.05.G04")).expect("route"),
        RouteDecision::ViaParent {
            inbox: code("000.00.05.G04")
        }
    );
    assert_eq!(
        r.route(&code("000.00.00.G04")).expect("route"),
        RouteDecision::Local {
            inbox: code("000.00.01.G04")
        }
    );
    assert_eq!(
        r.route(&code("000.00.00.G12")).expect("route"),
        RouteDecision::NationalAxis
    );
    assert_eq!(
        r.route(&code("H37.DN.001")).expect("route"),
        RouteDecision::NationalAxis
    );
    let unknown = r.route(&code("000.00.99.G04")).expect_err("unknown");
    assert_eq!(unknown.code(), "ROUTE_UNKNOWN_UNIT");

    // Suspending a level-2 unit holds its level-3 children's mail too.
    relay
        .registry()
        .set_state(
            relay.store().as_ref(),
            &code("000.00.05.G04"),
            UnitState::Suspended,
            "operator:an",
        )
        .await
        .expect("suspend");
    assert_eq!(
        r.route(&code("000.03.05.G04")).expect("route"),
        RouteDecision::Held {
            inbox: code("000.00.05.G04")
        }
    );

    assert!(r.may_send_as(&code("000.00.05.G04"), &code("000.03.05.G04")));
    assert!(r.may_send_as(&code("000.00.05.G04"), &code("000.00.05.G04")));
    assert!(!r.may_send_as(&code("000.00.05.G04"), &code("000.00.07.G04")));
    assert!(
        r.may_send_as(&code("000.00.01.G04"), &code("000.00.00.G04")),
        "Văn phòng speaks for the ministry"
    );

    // The registry survives a restart through the store.
    let again = Registry::new(code("000.00.00.G04"));
    assert_eq!(
        again.load(relay.store().as_ref()).await.expect("load"),
        57 + 226 + 1
    );
    assert_eq!(
        again.unit(&code("000.00.05.G04")).expect("unit").state,
        UnitState::Suspended
    );
}

#[tokio::test]
async fn a_document_reaches_local_units_and_the_axis_and_its_status_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = relay(dir.path()).await;
    let bytes = sample("doc-basic.edxml");
    let meta = parse(&bytes).expect("valid");
    let receipt = relay
        .submit(
            &adapter("000.00.05.G04"),
            &meta,
            PayloadInput::Bytes(bytes.clone().into()),
            None,
        )
        .await
        .expect("submit");
    assert!(!receipt.duplicate);
    assert_eq!(
        receipt.routes[0].decision,
        RouteDecision::Local {
            inbox: code("000.00.07.G04")
        }
    );
    assert_eq!(receipt.routes[1].decision, RouteDecision::NationalAxis);

    let store = relay.store();
    let now = Timestamp::now();
    let inbox = store
        .claim(
            &Destination::Inbox(code("000.00.07.G04")),
            10,
            Duration::from_secs(30),
            now,
        )
        .await
        .expect("claim");
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        store
            .payload(inbox[0].message.id)
            .await
            .expect("payload")
            .read_all()
            .expect("read")
            .as_ref(),
        bytes.as_slice()
    );
    let axis = store
        .claim(&Destination::NationalAxis, 10, Duration::from_secs(30), now)
        .await
        .expect("claim");
    assert_eq!(axis.len(), 1);
    assert_eq!(axis[0].token.key.recipient, code("000.00.00.G12"));

    relay
        .ack(&inbox[0].token, &inbox[0].message)
        .await
        .expect("ack");

    // The recipient answers 03: it goes back to the sender's inbox.
    let status_bytes = sample("status-03-accepted.edxml");
    let status_meta = parse(&status_bytes).expect("valid");
    let back = relay
        .submit(
            &adapter("000.00.07.G04"),
            &status_meta,
            PayloadInput::Bytes(status_bytes.into()),
            None,
        )
        .await
        .expect("status");
    assert_eq!(back.routes[0].recipient, code("000.00.05.G04"));
    let sender_inbox = store
        .claim(
            &Destination::Inbox(code("000.00.05.G04")),
            10,
            Duration::from_secs(30),
            Timestamp::now(),
        )
        .await
        .expect("claim");
    assert_eq!(sender_inbox.len(), 1);
    assert_eq!(
        sender_inbox[0]
            .message
            .summary
            .status_code
            .as_ref()
            .map(|s| s.as_str()),
        Some("03")
    );

    let trace = store
        .trace(meta.document_id().expect("id"))
        .await
        .expect("trace");
    let codes: Vec<&str> = trace.statuses.iter().map(|s| s.code.as_str()).collect();
    // The timeline follows what the reporters say: the sample's 03 is stamped
    // 2026/11/21 10:00:00 (Vietnam, 03:00 UTC), before today's 01 that the relay recorded
    // on acknowledgement.
    assert_eq!(
        codes,
        ["03", "01"],
        "03 from the status package, by its stamp; 01 recorded on acknowledgement"
    );
    assert_eq!(
        trace.statuses[0].reported_at,
        Some(Timestamp(1_795_230_000_000))
    );
    assert_eq!(trace.statuses[1].reported_at, Some(trace.statuses[1].at));

    // Resubmitting gives the original receipt.
    let again = relay
        .submit(
            &adapter("000.00.05.G04"),
            &meta,
            PayloadInput::Bytes(bytes.into()),
            None,
        )
        .await
        .expect("resubmit");
    assert!(again.duplicate);
    assert_eq!(again.message.id, receipt.message.id);
}

/// A status package `code` about doc-basic, reported as `from`.
fn status_about_doc_basic(from: &str, code_: &str) -> Vec<u8> {
    let doc = truc_edxml::DocumentId::new("000.00.05.G04,2026/11/20,1234/TCĐBVN-VP");
    truc_edxml::StatusBuilder::new(
        code(from),
        doc,
        truc_edxml::StatusCode::new(code_),
        "2026/11/21 10:00:00",
    )
    .build()
}

#[tokio::test]
async fn a_recall_request_goes_from_the_sender_to_every_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = relay(dir.path()).await;
    let bytes = sample("doc-basic.edxml");
    let meta = parse(&bytes).expect("valid");
    relay
        .submit(
            &adapter("000.00.05.G04"),
            &meta,
            PayloadInput::Bytes(bytes.into()),
            None,
        )
        .await
        .expect("submit");

    // Nobody but the sender may ask for the document back: not a recipient, not a third
    // unit speaking for itself, and the answer does not tell them the document exists.
    for (unit, from) in [
        ("000.00.07.G04", "000.00.07.G04"),
        ("000.00.09.G04", "000.00.09.G04"),
    ] {
        let package = status_about_doc_basic(from, "13");
        let err = relay
            .submit(
                &adapter(unit),
                &parse(&package).expect("valid"),
                PayloadInput::Bytes(package.into()),
                None,
            )
            .await
            .expect_err("not the sender");
        assert_eq!(err.code(), "ROUTE_UNKNOWN_DOCUMENT", "{unit}: {err}");
    }

    // The sender's request reaches both recipients: the local unit and, across the
    // national axis, the other ministry.
    let package = status_about_doc_basic("000.00.05.G04", "13");
    let receipt = relay
        .submit(
            &adapter("000.00.05.G04"),
            &parse(&package).expect("valid"),
            PayloadInput::Bytes(package.into()),
            None,
        )
        .await
        .expect("recall request");
    let routes: Vec<_> = receipt
        .routes
        .iter()
        .map(|r| (r.recipient.to_string(), r.decision.clone()))
        .collect();
    assert_eq!(
        routes,
        [
            (
                "000.00.07.G04".to_owned(),
                RouteDecision::Local {
                    inbox: code("000.00.07.G04")
                }
            ),
            ("000.00.00.G12".to_owned(), RouteDecision::NationalAxis),
        ]
    );
    let store = relay.store();
    let now = Timestamp::now();
    let inbox = store
        .claim(
            &Destination::Inbox(code("000.00.07.G04")),
            10,
            Duration::from_secs(30),
            now,
        )
        .await
        .expect("claim");
    let codes: Vec<_> = inbox
        .iter()
        .filter_map(|c| c.message.summary.status_code.as_ref().map(|s| s.as_str()))
        .collect();
    assert_eq!(codes, ["13"], "the recipient gets the request");
    let axis = store
        .claim(&Destination::NationalAxis, 10, Duration::from_secs(30), now)
        .await
        .expect("claim");
    assert!(
        axis.iter()
            .any(|c| c.message.kind == truc_edxml::PackageKind::Status
                && c.token.key.recipient == code("000.00.00.G12")),
        "the request goes up for the other ministry"
    );

    // Nobody on the national axis may speak for a unit of the ministry: neither a recall of
    // its document nor any other package.
    let forged = status_about_doc_basic("000.00.05.G04", "13");
    let err = relay
        .submit(
            &Submitter::NationalAxis {
                doc_id: "forged-1".into(),
            },
            &parse(&forged).expect("valid"),
            PayloadInput::Bytes(forged.into()),
            None,
        )
        .await
        .expect_err("a ministry unit never sends from the axis");
    assert_eq!(err.code(), "AUTH_FORGED_SENDER", "{err}");
    assert!(err.to_string().contains("forged-1"), "{err}");
    let again = sample("doc-basic.edxml");
    let err = relay
        .submit(
            &Submitter::NationalAxis {
                doc_id: "forged-2".into(),
            },
            &parse(&again).expect("valid"),
            PayloadInput::Bytes(again.into()),
            None,
        )
        .await
        .expect_err("a ministry unit never sends from the axis");
    assert_eq!(err.code(), "AUTH_FORGED_SENDER", "{err}");

    // A recipient outside the ministry that the national directory no longer lists still
    // gets the request (the axis carried the document there), and so do the others.
    relay
        .registry()
        .set_directory(
            store.as_ref(),
            vec![truc_relay::RemoteBody {
                code: code("000.00.00.G15"),
                name: "Bộ Tư pháp".into(),
                parent: None,
            }],
        )
        .await
        .expect("directory");
    let package = truc_edxml::StatusBuilder::new(
        code("000.00.05.G04"),
        truc_edxml::DocumentId::new("000.00.05.G04,2026/11/20,1234/TCĐBVN-VP"),
        truc_edxml::StatusCode::new("13"),
        "2026/11/21 10:05:00",
    )
    .build();
    let receipt = relay
        .submit(
            &adapter("000.00.05.G04"),
            &parse(&package).expect("valid"),
            PayloadInput::Bytes(package.into()),
            None,
        )
        .await
        .expect("recall request, the directory changed");
    assert!(!receipt.duplicate);
    assert_eq!(receipt.routes.len(), 2, "{:?}", receipt.routes);
    assert_eq!(receipt.routes[1].decision, RouteDecision::NationalAxis);

    // The recipient agrees (15): that answer goes back to the sender, as any status.
    let package = status_about_doc_basic("000.00.07.G04", "15");
    let back = relay
        .submit(
            &adapter("000.00.07.G04"),
            &parse(&package).expect("valid"),
            PayloadInput::Bytes(package.into()),
            None,
        )
        .await
        .expect("recall agreed");
    assert_eq!(back.routes.len(), 1);
    assert_eq!(back.routes[0].recipient, code("000.00.05.G04"));
    let trace = store
        .trace(meta.document_id().expect("id"))
        .await
        .expect("trace");
    let codes: Vec<&str> = trace.statuses.iter().map(|s| s.code.as_str()).collect();
    // By their stamps: the first request and the answer at 10:00, the second at 10:05.
    assert_eq!(codes, ["13", "15", "13"]);
}

#[tokio::test]
async fn forged_senders_unknown_units_and_unknown_documents_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = relay(dir.path()).await;
    let bytes = sample("doc-basic.edxml");
    let meta = parse(&bytes).expect("valid");
    let err = relay
        .submit(
            &adapter("000.00.07.G04"),
            &meta,
            PayloadInput::Bytes(bytes.into()),
            None,
        )
        .await
        .expect_err("forged");
    assert_eq!(err.code(), "AUTH_FORGED_SENDER");
    let msg = err.to_string();
    assert!(
        msg.contains("000.00.07.G04")
            && msg.contains("000.00.05.G04")
            && msg.contains("fingerprint-of-000.00.07.G04"),
        "{msg}"
    );
    let log = relay.store().audit_log(1, 1000).await.expect("audit");
    assert!(log
        .iter()
        .any(|e| e.action == "permission_denied" && e.actor == "adapter:000.00.07.G04"));

    // A recipient inside the ministry that is not registered.
    let date = truc_edxml::CalendarDate::new(2026, 11, 21).expect("date");
    let to_nowhere = truc_edxml::DocumentBuilder::new(
        code("000.00.05.G04"),
        vec![code("000.00.98.G04")],
        date,
        "9",
        "X",
    )
    .build();
    let meta = parse(&to_nowhere).expect("valid");
    let err = relay
        .submit(
            &adapter("000.00.05.G04"),
            &meta,
            PayloadInput::Bytes(to_nowhere.into()),
            None,
        )
        .await
        .expect_err("unknown unit");
    assert_eq!(err.code(), "ROUTE_UNKNOWN_UNIT");

    // A status for a document of the ministry that the relay never carried.
    let status = truc_edxml::StatusBuilder::new(
        code("000.00.07.G04"),
        truc_edxml::DocumentId::new("000.00.09.G04,2026/11/01,5/X"),
        truc_edxml::StatusCode::new("03"),
        "2026/11/21 10:00:00",
    )
    .build();
    let meta = parse(&status).expect("valid");
    let err = relay
        .submit(
            &adapter("000.00.07.G04"),
            &meta,
            PayloadInput::Bytes(status.into()),
            None,
        )
        .await
        .expect_err("unknown document");
    assert_eq!(err.code(), "ROUTE_UNKNOWN_DOCUMENT");
}

#[tokio::test]
async fn held_mail_is_released_when_the_unit_becomes_active() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = relay(dir.path()).await;
    let store = relay.store().clone();
    relay
        .registry()
        .set_state(
            store.as_ref(),
            &code("000.00.07.G04"),
            UnitState::Pending,
            "operator:an",
        )
        .await
        .expect("pending");
    let bytes = sample("doc-basic.edxml");
    let meta = parse(&bytes).expect("valid");
    let receipt = relay
        .submit(
            &adapter("000.00.05.G04"),
            &meta,
            PayloadInput::Bytes(bytes.into()),
            None,
        )
        .await
        .expect("submit");
    assert_eq!(
        receipt.routes[0].decision,
        RouteDecision::Held {
            inbox: code("000.00.07.G04")
        }
    );
    let dest = Destination::Inbox(code("000.00.07.G04"));
    let now = Timestamp::now();
    assert!(store
        .claim(&dest, 10, Duration::from_secs(30), now)
        .await
        .expect("claim")
        .is_empty());
    let released = relay
        .registry()
        .set_state(
            store.as_ref(),
            &code("000.00.07.G04"),
            UnitState::Active,
            "operator:an",
        )
        .await
        .expect("activate");
    assert_eq!(released, 1);
    assert_eq!(
        store
            .claim(&dest, 10, Duration::from_secs(30), Timestamp::now())
            .await
            .expect("claim")
            .len(),
        1
    );
}

#[test]
fn a_registry_can_come_from_a_spreadsheet() {
    let ministry = code("000.00.00.G04");
    let csv = "code,name,parent,state,certificates\n\
000.00.05.G04,Tổng cục Đường bộ Việt Nam,,active,ab12 cd34\n\
000.03.05.G04,\"Cục Quản lý đường bộ I, II\",,pending,\n\
H37.DN.001,Đơn vị ngoài mẫu,000.00.05.G04,,\n";
    let file = RegistryFile::from_csv(&ministry, csv).expect("csv");
    assert_eq!(file.units.len(), 3);
    assert_eq!(file.units[0].certificates, vec!["ab12", "cd34"]);
    assert_eq!(file.units[1].name, "Cục Quản lý đường bộ I, II");
    assert_eq!(file.units[1].state, UnitState::Pending);
    assert_eq!(file.units[2].parent, Some(code("000.00.05.G04")));
    let bad = RegistryFile::from_csv(&ministry, "code,name\nABC,x\n").expect_err("bad code");
    assert!(bad.to_string().contains("line 2"), "{bad}");
}
