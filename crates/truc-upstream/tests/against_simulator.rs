//! The client against the project's simulator over real HTTP.

mod common;

use std::time::Duration;

use truc_axis_sim::{Faults, SimConfig, Simulator, SystemConfig};
use truc_upstream::{BreakerState, Upstream, UpstreamConfig, UpstreamError, VdxpUpstream};

async fn simulator() -> truc_axis_sim::LocalSimulator {
    truc_axis_sim::LocalSimulator::start(vec![
        SystemConfig::new("bogtvt", "s-gtvt", "000.00.00.G04"),
        SystemConfig::new("botc", "s-tc", "000.00.00.G12"),
    ])
    .await
    .expect("simulator")
}

fn client(base: &str, system: &str, secret: &str) -> VdxpUpstream {
    VdxpUpstream::new(UpstreamConfig {
        base_url: base.into(),
        system_id: system.into(),
        secret: secret.into(),
        ca_pem: None,
        client_identity_pem: None,
        timeout: Duration::from_secs(5),
        breaker_max_open: Duration::from_secs(300),
    })
    .expect("client")
}

fn package() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/samples/valid/doc-basic.edxml"
    ))
    .expect("sample")
}

#[tokio::test]
async fn send_list_fetch_acknowledge_and_report() {
    let r = simulator().await;
    let gtvt = client(&r.base_url, "bogtvt", "s-gtvt");
    let tc = client(&r.base_url, "botc", "s-tc");
    let doc_id = gtvt
        .send(
            &package(),
            "000.00.05.G04",
            &["000.00.00.G12".into()],
            false,
        )
        .await
        .expect("send");
    let waiting = tc.list_received(false).await.expect("list");
    assert_eq!(waiting.len(), 1);
    assert!(tc
        .list_received(true)
        .await
        .expect("list statuses")
        .is_empty());
    assert_eq!(
        tc.fetch(&waiting[0].doc_id).await.expect("fetch"),
        package()
    );
    tc.acknowledge(&waiting[0].doc_id, true).await.expect("ack");
    assert!(tc.list_received(false).await.expect("list").is_empty());
    let report = gtvt.sent_report(&doc_id).await.expect("report");
    assert_eq!(report[0].receive_status, "done");
    assert!(gtvt
        .agencies()
        .await
        .expect("agencies")
        .iter()
        .any(|a| a.code == "000.00.00.G12"));
    assert_eq!(gtvt.link(), BreakerState::Closed);
}

#[tokio::test]
async fn a_wrong_secret_is_reported_as_a_credentials_problem_not_retried() {
    let r = simulator().await;
    let wrong = client(&r.base_url, "botc", "not-the-secret");
    let err = wrong.list_received(false).await.expect_err("refused");
    assert!(matches!(err, UpstreamError::Credentials { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("secret"),
        "an operator sees what to check: {err}"
    );
    assert_eq!(
        wrong.link(),
        BreakerState::Closed,
        "a refusal is not a link failure"
    );
}

#[tokio::test]
async fn an_outage_opens_the_circuit_and_recovery_closes_it() {
    let r = simulator().await;
    let tc = client(&r.base_url, "botc", "s-tc");
    r.sim.set_faults(Faults {
        outage_until_ms: Some(i64::MAX),
        ..Faults::default()
    });
    for i in 0..10 {
        assert_eq!(
            tc.link(),
            BreakerState::Closed,
            "still closed after {i} failures"
        );
        let err = tc.list_received(false).await.expect_err("down");
        assert!(err.is_transient(), "{err}");
    }
    assert_eq!(
        tc.link(),
        BreakerState::Open,
        "open after 10 consecutive failures"
    );
    let err = tc.list_received(false).await.expect_err("not even tried");
    assert_eq!(err.code(), "UPSTREAM_CIRCUIT_OPEN");
    r.sim.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    tc.list_received(false).await.expect("the probe succeeds");
    assert_eq!(tc.link(), BreakerState::Closed);
}

#[tokio::test]
async fn https_with_a_custom_ca_works_and_resets_are_transient() {
    let tls = common::axis_tls("axis test CA");
    let sim = Simulator::new(SimConfig {
        systems: vec![SystemConfig {
            id: "botc".into(),
            secret: "s-tc".into(),
            organs: vec!["000.00.00.G12".into()],
            name: String::new(),
        }],
        agencies: Vec::new(),
        skew_secs: 300,
        max_package_bytes: 512 * 1024 * 1024,
    });
    let (port, _stop) = common::serve_https(sim.clone(), &tls).await;
    let base = format!("https://localhost:{port}");
    let trusted = VdxpUpstream::new(UpstreamConfig {
        base_url: base.clone(),
        system_id: "botc".into(),
        secret: "s-tc".into(),
        ca_pem: Some(tls.ca_pem.clone().into_bytes()),
        client_identity_pem: None,
        timeout: Duration::from_secs(5),
        breaker_max_open: Duration::from_secs(300),
    })
    .expect("client");
    let mut ready = false;
    for _ in 0..50 {
        if trusted.list_received(false).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "HTTPS with the custom CA works");
    // Without the CA, the axis's certificate is not trusted.
    let untrusting = client(&base, "botc", "s-tc");
    let err = untrusting
        .list_received(false)
        .await
        .expect_err("untrusted");
    assert!(err.is_transient(), "{err}");

    // A connection cut mid-answer is a transient failure, not a protocol refusal.
    sim.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let err = trusted.list_received(false).await.expect_err("reset");
    assert!(
        matches!(
            err,
            UpstreamError::Unavailable(_) | UpstreamError::Protocol(_)
        ),
        "{err}"
    );
    assert!(err.is_transient());
    assert_eq!(sim.counters().get("getReceivedEdocList.reset"), Some(&1));
}

/// A call carrying a package may take the call timeout plus a second per MiB (the slowest
/// link allowed, 1 MiB/s): a large package on a modest link is not cut off by the timeout
/// of small calls. Here the axis answers every call after 1.5 s, the call timeout is 1 s:
/// a small call times out, a 1.5 MiB package (2.5 s allowed) goes through.
#[tokio::test]
async fn a_package_may_take_longer_than_a_small_call() {
    let r = simulator().await;
    let slow_client = |system: &str, secret: &str| {
        VdxpUpstream::new(UpstreamConfig {
            base_url: r.base_url.clone(),
            system_id: system.into(),
            secret: secret.into(),
            ca_pem: None,
            client_identity_pem: None,
            timeout: Duration::from_secs(1),
            breaker_max_open: Duration::from_secs(300),
        })
        .expect("client")
    };
    let (gtvt, tc) = (slow_client("bogtvt", "s-gtvt"), slow_client("botc", "s-tc"));
    let package: Vec<u8> = (0..1536 * 1024).map(|i| (i % 251) as u8).collect();
    r.sim.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    let small = tc.list_received(false).await;
    assert!(
        matches!(small, Err(UpstreamError::Unavailable(_))),
        "a small call is held to the call timeout: {small:?}"
    );
    gtvt.send(&package, "000.00.05.G04", &["000.00.00.G12".into()], false)
        .await
        .expect("the package's upload has its transfer allowance");
    r.sim.set_faults(Faults::default());
    let waiting = tc.list_received(false).await.expect("list");
    assert_eq!(waiting.len(), 1);
    // Getting it: the answer must start within the call timeout, then keep coming.
    r.sim.set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    let late = tc.fetch(&waiting[0].doc_id).await;
    assert!(
        matches!(late, Err(UpstreamError::Unavailable(_))),
        "{late:?}"
    );
    r.sim.set_faults(Faults::default());
    assert_eq!(tc.fetch(&waiting[0].doc_id).await.expect("fetch"), package);
    assert_eq!(
        truc_upstream::transfer_allowance(Duration::from_secs(1), package.len() as u64),
        Duration::from_millis(2500)
    );
}

#[tokio::test]
async fn a_long_download_does_not_hold_back_the_calls_that_test_a_recovering_axis() {
    let r = simulator().await;
    let gtvt = client(&r.base_url, "bogtvt", "s-gtvt");
    let tc = client(&r.base_url, "botc", "s-tc");
    gtvt.send(
        &package(),
        "000.00.05.G04",
        &["000.00.00.G12".into()],
        false,
    )
    .await
    .expect("send");
    let waiting = tc.list_received(false).await.expect("list");
    assert_eq!(waiting.len(), 1);
    // The axis goes down: ten failed calls open the circuit.
    r.sim.set_faults(Faults {
        outage_until_ms: Some(i64::MAX),
        ..Faults::default()
    });
    for _ in 0..10 {
        tc.list_received(false).await.expect_err("down");
    }
    assert_eq!(tc.link(), BreakerState::Open);
    // Back, on a slow link: after the open delay, the first trial is the download, whose
    // answer takes seconds to come.
    r.sim.set_faults(Faults {
        throttle_bytes_per_sec: 1_000,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let mut download = tc.fetch_stream(&waiting[0].doc_id).await.expect("answered");
    // Two more trials fail (the axis stumbles again)...
    r.sim.set_faults(Faults {
        outage_until_ms: Some(i64::MAX),
        throttle_bytes_per_sec: 1_000,
        ..Faults::default()
    });
    for _ in 0..2 {
        let err = tc.list_received(false).await.expect_err("down");
        assert_ne!(err.code(), "UPSTREAM_CIRCUIT_OPEN", "{err}");
    }
    // ...and the next trial is let through while the download still comes, and closes it.
    r.sim.set_faults(Faults {
        throttle_bytes_per_sec: 1_000,
        ..Faults::default()
    });
    tc.list_received(false)
        .await
        .expect("a trial while the download still comes");
    assert_eq!(tc.link(), BreakerState::Closed);
    let mut got = Vec::new();
    while let Some(piece) = download.next_piece().await.expect("the download ends well") {
        got.extend(piece);
    }
    assert_eq!(got, package());
}

/// A server that answers every request with `head` and then `body_bytes` bytes of `fill`.
async fn hostile_axis(head: String, body_bytes: usize, fill: u8) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let head = head.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![fill; 1 << 20];
                let mut left = body_bytes;
                while left > 0 {
                    let n = left.min(block.len());
                    if socket.write_all(&block[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_axis_answering_without_end_or_elsewhere_is_refused_not_followed() {
    // 80 MiB of answer without a length: refused past 64 MiB, not read whole into memory.
    let huge = 80 << 20;
    let base = hostile_axis(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".into(),
        huge,
        b' ',
    )
    .await;
    let err = client(&base, "botc", "s-tc")
        .list_received(false)
        .await
        .expect_err("too large");
    assert_eq!(err.code(), "UPSTREAM_PROTOCOL", "{err}");
    assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
    // One announcing 80 MiB is refused at once, before any of it is read.
    let base = hostile_axis(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {huge}\r\n\r\n"
        ),
        0,
        b' ',
    )
    .await;
    let err = client(&base, "botc", "s-tc")
        .list_received(false)
        .await
        .expect_err("announced too large");
    assert!(err.to_string().contains("larger than 64 MiB"), "{err}");

    // A redirect would take the signed headers to another host: not followed.
    let base = hostile_axis(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\n\r\n"
            .into(),
        0,
        b' ',
    )
    .await;
    let err = client(&base, "botc", "s-tc")
        .list_received(false)
        .await
        .expect_err("redirected");
    assert_eq!(err.code(), "UPSTREAM_PROTOCOL", "{err}");
    assert!(
        err.to_string().contains("http://127.0.0.1:9/elsewhere"),
        "{err}"
    );
}
