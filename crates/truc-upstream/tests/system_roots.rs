//! The axis's certificate is trusted through the system's certificate authorities, without
//! `[upstream] ca_file`: the real axis's chain ends at a CA the system trusts. Its own test
//! binary, since it points `SSL_CERT_FILE` (read for the system's trust store) at a test CA
//! for the whole process.

use std::time::Duration;

mod common;

use truc_axis_sim::{SimConfig, Simulator, SystemConfig};
use truc_upstream::{Upstream, UpstreamConfig, VdxpUpstream};

#[tokio::test]
async fn the_axis_is_trusted_through_the_systems_authorities() {
    let tls = common::axis_tls("a CA the system trusts");
    let dir = tempfile::tempdir().expect("tempdir");
    let system_bundle = dir.path().join("system-ca.pem");
    std::fs::write(&system_bundle, &tls.ca_pem).expect("bundle");
    // Before any client is made in this process.
    std::env::set_var("SSL_CERT_FILE", &system_bundle);
    std::env::remove_var("SSL_CERT_DIR");

    let sim = Simulator::new(SimConfig {
        systems: vec![SystemConfig::new("botc", "s-tc", "000.00.00.G12")],
        agencies: Vec::new(),
        skew_secs: 300,
        max_package_bytes: 1024 * 1024,
    });
    let (port, _stop) = common::serve_https(sim, &tls).await;
    let client = VdxpUpstream::new(UpstreamConfig {
        base_url: format!("https://localhost:{port}"),
        system_id: "botc".into(),
        secret: "s-tc".into(),
        ca_pem: None,
        client_identity_pem: None,
        timeout: Duration::from_secs(5),
        breaker_max_open: Duration::from_secs(300),
    })
    .expect("client");
    let mut last = None;
    for _ in 0..50 {
        match client.list_received(false).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last.is_none(),
        "HTTPS through the system's authorities failed: {last:?}"
    );

    // With `ca_file`, only its authorities are trusted: the system's no longer stand in
    // for the axis.
    let pinned = VdxpUpstream::new(UpstreamConfig {
        base_url: format!("https://localhost:{port}"),
        system_id: "botc".into(),
        secret: "s-tc".into(),
        ca_pem: Some(common::unrelated_ca_pem("the axis's own CA").into_bytes()),
        client_identity_pem: None,
        timeout: Duration::from_secs(5),
        breaker_max_open: Duration::from_secs(300),
    })
    .expect("client");
    let err = pinned
        .list_received(false)
        .await
        .expect_err("a certificate of a CA outside ca_file");
    assert!(err.is_transient(), "{err}");
}
