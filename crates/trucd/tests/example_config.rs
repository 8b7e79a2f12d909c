//! The annotated example configuration in `deploy/` parses.

#[test]
fn the_example_configuration_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/trucd.example.toml"
    ))
    .expect("deploy/trucd.example.toml");
    let config = trucd::Config::from_toml(&text).expect("valid");
    assert_eq!(config.ministry.as_str(), "000.00.00.G04");
    assert_eq!(config.limits.lease_secs, 60);
    assert!(config.tls.is_some());
}
