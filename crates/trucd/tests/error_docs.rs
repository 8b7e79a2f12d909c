//! Every error code the gRPC service can return is in `docs/errors.md`.

#[test]
fn every_code_in_the_service_is_documented() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md"))
            .expect("docs/errors.md");
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/grpc.rs"))
        .expect("grpc.rs");
    let mut found = 0;
    for piece in src.split('"') {
        let is_code = piece.len() > 4
            && piece.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            && piece.contains('_');
        if is_code {
            found += 1;
            assert!(
                docs.contains(&format!("`{piece}`")),
                "{piece} is missing from docs/errors.md"
            );
        }
    }
    assert!(found >= 10, "found only {found} codes in grpc.rs");
}
