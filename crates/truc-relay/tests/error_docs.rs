//! `docs/errors.md` documents every relay error code.

#[test]
fn every_code_is_documented() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md"))
            .expect("docs/errors.md");
    for code in [
        "ROUTE_UNKNOWN_UNIT",
        "ROUTE_UNKNOWN_REMOTE",
        "ROUTE_UNKNOWN_DOCUMENT",
        "AUTH_FORGED_SENDER",
        "AUTH_UNKNOWN_CERTIFICATE",
        "AUTH_UNIT_SUSPENDED",
        "RELAY_CONFIG",
    ] {
        assert!(
            docs.contains(&format!("`{code}`")),
            "{code} is missing from docs/errors.md"
        );
    }
}
